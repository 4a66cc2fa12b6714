"""The only package that imports llama_cpp. Blocking engine calls run in worker threads."""

from server.engine.sequence import Piece, Request, TokenLogprob, TopLogprob, Usage, check_context
from server.engine.llama import LlamaEngine, load_engine
from server.engine.sampling import SamplingParams, any_json_object_grammar, schema_grammar
from server.engine.threads import Channel

__all__ = [
    "LlamaEngine", "Piece", "Request", "SamplingParams", "TokenLogprob", "TopLogprob", "Usage",
    "any_json_object_grammar", "check_context", "load_engine", "schema_grammar", "Channel",
]
