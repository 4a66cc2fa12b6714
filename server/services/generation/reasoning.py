"""The reasoning split: a thinking model's `<think>...</think>` comes back as `reasoning_content`, the rest
as content (DeepSeek's API shape, as llama-server and vLLM return it).

Thinking starts either in the prompt (the template's generation prompt ends with `<think>`, so the whole
output is reasoning until `</think>`) or with `<think>` at the very start of the output. Output that
ends while still thinking is all reasoning. One streaming splitter serves both streams and whole answers.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


def thinks(template: str | None, reasoning_format: str) -> bool:
    """Whether answers from this template get split: `auto` asks the template itself."""
    if reasoning_format == "none":
        return False
    return reasoning_format == "deepseek" or (template is not None and OPEN in template)


class ReasoningSplitter:
    """Text in, (reasoning, content) out; holds back a tail that could be the start of a tag."""

    def __init__(self, *, open_at_start: bool) -> None:
        self._state = "thinking" if open_at_start else "start"
        self._held = ""
        self._said = False  # whether any reasoning text went out: until then, leading blanks are dropped
        self.thought = open_at_start  # whether any thinking was seen

    def feed(self, text: str) -> tuple[str, str]:
        buffer, self._held = self._held + text, ""
        reasoning = content = ""
        if self._state == "start":
            stripped = buffer.lstrip()
            if OPEN.startswith(stripped) and len(stripped) < len(OPEN):  # cannot tell yet
                self._held = buffer
                return "", ""
            if stripped.startswith(OPEN):
                self._state, buffer, self.thought = "thinking", stripped[len(OPEN):], True
            else:
                self._state = "content"
        if self._state == "thinking":
            # Reasoning comes out trimmed, streamed or whole: blanks at its start are dropped, and blanks are
            # held back until text follows them (the ones before `</think>` never go out).
            if not self._said:
                buffer = buffer.lstrip()
            end = buffer.find(CLOSE)
            if end < 0:
                keep = partial_tail(buffer, CLOSE)
                body = buffer[:len(buffer) - keep]
                said = body.rstrip()
                self._held = buffer[len(said):]
                self._said = self._said or bool(said)
                return said, ""
            reasoning, buffer = buffer[:end].rstrip(), buffer[end + len(CLOSE):]
            self._state = "after"
        if self._state == "after":  # the blank lines between `</think>` and the answer are neither
            buffer = buffer.lstrip()
            if not buffer:
                return reasoning, ""
            self._state = "content"
        content = buffer
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What is still held at the end of the output."""
        held, self._held = self._held, ""
        return (held.rstrip(), "") if self._state == "thinking" else ("", held)


def split(text: str, *, open_at_start: bool) -> tuple[str | None, str]:
    """A whole answer as (reasoning or None when there was none, content)."""
    splitter = ReasoningSplitter(open_at_start=open_at_start)
    reasoning, content = splitter.feed(text)
    more_reasoning, more_content = splitter.finish()
    reasoning += more_reasoning
    return (reasoning.strip() if splitter.thought else None), content + more_content


def partial_tail(text: str, tag: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of `tag`."""
    return next((k for k in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-k:])), 0)
