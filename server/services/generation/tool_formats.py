"""Tool-call formats of the model families, as data: how a call is written, how the grammar opens it, how
to find it in the output. One table, one parser; a family is a row.

- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Hermes, Qwen 2.5/3, and the
  server's own described-tools prompt);
- `llama3`: bare JSON `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>` (Llama 3.x);
- `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (Mistral v3 templates).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

from server.services.generation.events import Call


@dataclass(frozen=True)
class ToolFormat:
    name: str
    markers: tuple[str, ...]  # template text that says the template is of this family
    open: str  # literal text before the call's JSON, written by the grammar
    close: str  # literal text after it
    starts: tuple[str, ...]  # output text that begins a call: the lazy grammar's trigger is the first
    arguments_key: str  # "arguments" or "parameters"
    listed: bool = False  # calls written as one JSON list
    id_length: int = 0  # ids the template checks for length (Mistral: 9 letters and digits); 0: ours

    def new_id(self) -> str:
        if self.id_length:
            return "".join(secrets.choice(_ALNUM) for _ in range(self.id_length))
        return f"call_{secrets.token_hex(12)}"

    def history_id(self, call_id: str) -> str:
        """A call id from the history as the template accepts it: the same id always maps to the same one,
        so a call and its result still match (`call_...` ids from other servers meet Mistral's rule)."""
        if not self.id_length or (len(call_id) == self.id_length and call_id.isalnum()):
            return call_id
        digest = hashlib.sha256(call_id.encode()).digest()
        return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:self.id_length])


_ALNUM = string.ascii_letters + string.digits


HERMES = ToolFormat("hermes", ("<tool_call>",), "<tool_call>", "</tool_call>", ("<tool_call>",), "arguments")
LLAMA3 = ToolFormat("llama3", ("<|python_tag|>", "ipython"), "", "", ('{"name"', "<|python_tag|>"), "parameters")
MISTRAL = ToolFormat("mistral", ("[TOOL_CALLS]",), "[TOOL_CALLS][", "]", ("[TOOL_CALLS]",), "arguments",
                     listed=True, id_length=9)
FORMATS = (MISTRAL, LLAMA3, HERMES)  # most specific markers first


@functools.lru_cache(maxsize=32)  # once per template text, not once per request
def family(template: str) -> ToolFormat:
    """The family a tool-aware template belongs to; Hermes-style tags when nothing says otherwise."""
    return next((f for f in FORMATS if any(marker in template for marker in f.markers)), HERMES)


def call_schema(fmt: ToolFormat, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of one call to one tool, in the family's own keys."""
    return {
        "type": "object",
        "properties": {"name": {"const": name}, fmt.arguments_key: parameters},
        "required": ["name", fmt.arguments_key],
    }


def first_start(fmt: ToolFormat, text: str, begin: int = 0) -> int:
    """Where the first call begins in `text`, or -1."""
    found = [i for i in (text.find(s, begin) for s in fmt.starts) if i >= 0]
    return min(found, default=-1)


def parse(fmt: ToolFormat, text: str) -> tuple[str | None, list[Call]]:
    """Split output into content and tool calls. A call that did not complete (max_tokens cut it) or does
    not parse is not a call: the text stays content."""
    start = first_start(fmt, text)
    if start < 0:
        return text, []
    calls = _calls(fmt, text[start:])
    if not calls:
        return text, []
    content = text[:start].strip()
    return (content or None), calls


def _calls(fmt: ToolFormat, tail: str) -> list[Call]:
    decoder = json.JSONDecoder(strict=False)
    found: list[Any] = []
    position = 0
    while True:
        start = first_start(fmt, tail, position)
        if start < 0:
            break
        marker = next(s for s in fmt.starts if tail.startswith(s, start))
        body = start if marker.startswith("{") else start + len(marker)  # `{"name"` is the JSON itself
        body = len(tail) - len(tail[body:].lstrip())
        try:
            value, end = decoder.raw_decode(tail, body)
        except ValueError:
            break
        if fmt.close and not fmt.listed and not tail[end:].lstrip().startswith(fmt.close):
            break
        found += value if fmt.listed and isinstance(value, list) else [value]
        position = end
    calls = []
    for value in found:
        try:
            name, arguments = value["name"], value.get(fmt.arguments_key, value.get("arguments"))
        except (TypeError, AttributeError, KeyError):
            return []
        if not isinstance(name, str) or arguments is None:
            return []
        calls.append(Call(id=fmt.new_id(), name=name, arguments=json.dumps(arguments)))
    return calls
