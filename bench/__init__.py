"""Benchmarks: our server against direct in-process llama-cpp-python calls and llama-cpp-python's own
server, on the same model and engine settings. Run with `make bench` (or `python -m bench`)."""
