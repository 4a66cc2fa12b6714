"""The engine boundary. This package's top level never imports llama_cpp: `Model` (interface.py) is what
services and the pool use, `server.engine.launcher.WorkerLauncher` loads a model in a process of its own
(server/engine/client.py talks to it; imported by the app only: the worker process must not pay for the
client's imports), and only server/engine/worker/ (that process) imports llama_cpp."""

from server.engine.interface import Exit, Indexed, Model
from server.engine.types import (
    ChatPrompt,
    Embeddings,
    Grammar,
    Piece,
    Request,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
    Usage,
    check_context,
)

__all__ = [
    "ChatPrompt", "Embeddings", "Exit", "Grammar", "Indexed", "Model", "Piece", "Request",
    "SamplingParams", "TokenLogprob", "TopLogprob", "Usage", "check_context",
]
