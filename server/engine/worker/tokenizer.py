"""Text to tokens with the special tokens parsed, in time linear in the text.

llama.cpp finds special tokens by splitting the text around each occurrence, one special token after
another, and its cost grows with the square of the occurrences: `"<|im_end|>x" * 8000` took 1.1 s here,
20,000 of them 10 s, a 4 MiB body hours, all in the worker while the alias waits. Each occurrence ends a
fragment that llama.cpp tokenizes on its own, so cutting the text right after every CHUNK-th occurrence
and tokenizing the pieces one after another gives the same tokens at a bounded cost per piece: about
50 us an occurrence (40,000: 2.0-2.7 s instead of minutes). Past that, `fewest_tokens` lets a caller
refuse a text that cannot fit its context before tokenizing it at all. A vocabulary
whose special tokens strip the whitespace around them (lstrip/rstrip) is tokenized whole: there a cut
could change what is stripped.
"""

from __future__ import annotations

import re

import llama_cpp

from server.engine.worker.compat import model_of

CHUNK = 32  # special-token occurrences per llama.cpp call (measured: 16-128 alike)

_SPECIAL = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
_STRIPS = llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP | llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP


class Tokenizer:
    def __init__(self, llm: llama_cpp.Llama) -> None:
        self._llm = llm
        vocab = model_of(llm).vocab
        specials: list[bytes] = []
        strips = False
        longest = 1
        for token in range(llm.n_vocab()):
            attr = llama_cpp.llama_vocab_get_attr(vocab, token)
            text = llama_cpp.llama_vocab_get_text(vocab, token) or b""
            longest = max(longest, len(text))
            if attr & _SPECIAL:
                specials.append(text)
                strips = strips or bool(attr & _STRIPS)
        # No token stands for more of the text than its own stored text's length (byte-level BPE stores a
        # byte as one or two; SentencePiece a space as three): the text needs at least len / longest tokens.
        self._longest = longest
        texts = sorted({t for t in specials if t}, key=len, reverse=True)  # the longest first, as llama.cpp
        self._specials = None if strips or not texts else re.compile(b"|".join(re.escape(t) for t in texts))

    def fewest_tokens(self, text: bytes) -> int:
        """A lower bound on the tokens `text` becomes with special tokens parsed, found without tokenizing
        (each special token's occurrence is one token; no token covers more than the longest's bytes):
        a prompt that cannot fit the context is refused before the tokenizer is asked."""
        specials = sum(1 for _ in self._specials.finditer(text)) if self._specials is not None else 0
        return max(specials, -(-len(text) // self._longest))

    def __call__(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """`Llama.tokenize`'s arguments and answer."""
        if not special or self._specials is None:
            return self._llm.tokenize(text, add_bos=add_bos, special=special)
        cuts = [m.end() for n, m in enumerate(self._specials.finditer(text), 1) if n % CHUNK == 0]
        tokens: list[int] = []
        start = 0
        for end in [*cuts, len(text)]:
            if end > start:
                tokens += self._llm.tokenize(text[start:end], add_bos=add_bos and start == 0, special=True)
            start = end
        return tokens
