"""The generation core every API maps onto: a plan in (generation/plan.py), typed events or a whole answer
out (generation/events.py), run by generation/run.py."""
