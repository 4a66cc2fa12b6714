"""Chat messages -> prompt tokens and the template's own stop strings, with the alias's chat format.

llama-cpp-python keeps its chat formats behind its chat-completion handlers (the GGUF's Jinja template,
or a named format such as `chatml`). Each handler renders the prompt, tokenizes it and hands it to
`create_completion`. We call the handler with a stand-in for the model that captures the tokenized
prompt at that hand-over instead of generating: every format llama-cpp-python knows works, and the
generation itself stays in our own loop.
"""

from __future__ import annotations

from typing import Any

import jinja2
import llama_cpp
from llama_cpp import llama_chat_format

from server.errors import InvalidRequestError


class _Captured(Exception):
    def __init__(self, prompt: list[int], stop: list[str]) -> None:
        self.prompt = prompt
        self.stop = stop


class _PromptCapture:
    """Looks like a `Llama` to a chat handler; stops it at `create_completion` with the prompt."""

    verbose = False

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self._llm = llm

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return self._llm.tokenize(text, add_bos=add_bos, special=special)

    def create_completion(self, prompt: Any, stop: Any = None, **_: Any) -> Any:
        if isinstance(prompt, str):
            prompt = self._llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        raise _Captured(list(prompt), stops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)


def chat_handler(llm: llama_cpp.Llama) -> Any:
    """The handler `Llama.create_chat_completion` would use for this model."""
    return (
        llm.chat_handler
        or llm._chat_handlers.get(llm.chat_format)  # noqa: SLF001 - the GGUF's own templates live here
        or llama_chat_format.get_chat_completion_handler(llm.chat_format)
    )


def render_chat(llm: llama_cpp.Llama, handler: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[str]]:
    try:
        handler(llama=_PromptCapture(llm), messages=messages, stream=False)
    except _Captured as captured:
        return captured.prompt, [s for s in captured.stop if s]
    except (jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestError(f"The model's chat template rejected these messages: {exc}", param="messages") from exc
    raise InvalidRequestError("This alias's chat format does not produce a plain prompt.", param="messages")
