"""Prompt lookup: a draft for a sequence from its own history (prompt and output), where the last few
tokens occurred before. What followed them then is the guess for what follows now: code repeated with
a change, a document rewritten, an answer quoting its context, tool arguments written again.

One index per sequence, of every `size`-token n-gram's positions, grown as the sequence grows (a step
adds a few tokens, so a lookup costs microseconds, not a scan of the history). Of the last few places
the n-gram occurred, the one whose tokens before it agree longest with the tokens before now wins: the
length of that agreement (`match`) is how much the guess can be trusted (speculation.py learns how
much, per length).
"""

from __future__ import annotations

from collections import defaultdict

SEPARATOR = -1  # between a prediction and the history: no token, so no n-gram spans it
MAX_MATCH = 64  # agreement counted up to this many tokens
CANDIDATES = 8  # occurrences of the n-gram looked at, most recent first


class NgramIndex:
    def __init__(self, size: int, prediction: list[int] | None = None) -> None:
        """`prediction`: tokens the answer is expected to repeat, looked up before the history."""
        self.size = size
        self.tokens: list[int] = [*prediction, SEPARATOR] if prediction else []
        self._offset = len(self.tokens)
        self._at: defaultdict[tuple[int, ...], list[int]] = defaultdict(list)
        for successor in range(size, self._offset - 1):
            self._at[tuple(self.tokens[successor - size:successor])].append(successor - size)

    def sync(self, history: list[int], last: int) -> None:
        """Catch up with `history + [last]`, which extends what was indexed before."""
        tokens, size = self.tokens, self.size
        start = len(tokens)
        tokens.extend(history[start - self._offset:])
        tokens.append(last)
        at = self._at
        # An n-gram is indexed once the token after it exists: the newest one, looked up, is never its
        # own candidate.
        for successor in range(max(size, start, self._offset + size), len(tokens)):
            at[tuple(tokens[successor - size:successor])].append(successor - size)

    def lookup(self, limit: int) -> tuple[list[int], int]:
        """Up to `limit` tokens guessed to come next, and how many tokens of agreement back the guess
        (0 with no guess)."""
        tokens, size = self.tokens, self.size
        n = len(tokens)
        if n <= size or limit <= 0:
            return [], 0
        places = self._at.get(tuple(tokens[n - size:]))
        if not places:
            return [], 0
        best, best_match = -1, 0
        for start in reversed(places[-CANDIDATES:]):
            match = size
            while (match < MAX_MATCH and start - 1 - (match - size) >= 0
                   and tokens[start - 1 - (match - size)] == tokens[n - 1 - match]):
                match += 1
            if match > best_match:
                best, best_match = start, match
        follow = best + size
        draft = tokens[follow:follow + limit]
        if SEPARATOR in draft:  # a guess from the prediction ends with it
            draft = draft[:draft.index(SEPARATOR)]
        return draft, best_match
