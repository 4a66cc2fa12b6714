"""The only package that imports llama_cpp. Blocking engine calls run in worker threads."""

from server.engine.llama import GenerationParams, LlamaEngine, Piece, load_engine
from server.engine.threads import run_blocking, stream_in_thread

__all__ = ["GenerationParams", "LlamaEngine", "Piece", "load_engine", "run_blocking", "stream_in_thread"]
