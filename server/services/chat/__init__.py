"""The chat completions API on the generation core: request -> plan, events -> chunks, answer -> completion."""
