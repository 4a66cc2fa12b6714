"""The generation core every API maps onto: a `Conversation` in (generation/input.py), planned without the
model (generation/plan.py), run into typed events or a whole answer (generation/run.py, generation/events.py)."""
