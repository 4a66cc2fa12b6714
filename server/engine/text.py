"""Turning token bytes into text as it is generated: complete UTF-8 only, and stop strings held back.

Pure Python, no llama_cpp: the token loop feeds bytes in and gets text out.
"""

from __future__ import annotations

import codecs


class Utf8Stream:
    """Bytes in, text out; a character split across tokens comes out once it is whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds the first stop string in generated text, holding back any tail that could begin one.

    `feed` returns (text safe to emit now, whether a stop string was hit). After a hit, the text up to
    the stop string has been returned and the rest is dropped, as OpenAI does (the stop string itself
    is not part of the output). `matched` is the stop string that was hit, for APIs that report it.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        hit, stop = min(((i, s) for s, i in ((s, buffer.find(s)) for s in self._stops) if i >= 0),
                        default=(-1, None))
        if hit >= 0:
            self._held = ""
            self.matched = stop
            return buffer[:hit], True
        keep = self._holdback(buffer)
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _holdback(self, buffer: str) -> int:
        """Length of the longest buffer suffix that is a proper prefix of some stop string."""
        for size in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(s.startswith(tail) for s in self._stops):
                return size
        return 0
