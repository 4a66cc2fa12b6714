"""The requests of the at-defaults comparison (issue 11): which prompts, how many streams, which body.

Pure: no I/O, no clock, no global random state. Every body is a function of the cell, the round and the
request's place in it, so two runs (and two contenders) send exactly the same requests.

- `unique`: every request has a user message no server has seen before, so nothing of it is in a cache
  (the system prompt, the same for all, is a shared prefix as it is in real traffic).
- `shared`: every request sends the same messages, so a server can reuse the cached prompt.
- `seeded`: the same messages with a `seed` (a different one per request), which some servers treat as
  "start from an empty cache".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROMPT_KINDS = ("unique", "shared", "seeded")
STREAM_COUNTS = (1, 4, 16)
SYSTEM = "You are a helpful assistant."
SHARED_QUESTION = "Write a long story about a lighthouse keeper who finds a message in a bottle."

_ADJECTIVES = ("brave", "tired", "curious", "silent", "clever", "lonely", "cheerful", "stubborn", "gentle",
               "restless", "forgetful", "patient", "careless", "honest", "proud", "shy", "wise")
_CHARACTERS = ("baker", "sailor", "robot", "fox", "teacher", "gardener", "pilot", "owl", "miner", "painter",
               "detective", "child", "dragon", "librarian", "farmer", "clockmaker", "astronaut", "cat", "knight")
_PLACES = ("a desert town", "the moon", "an old library", "a flooded city", "a mountain village", "a night train",
           "a coral reef", "a busy market", "a frozen lake", "a lighthouse", "a space station", "a forest")


@dataclass(frozen=True)
class Cell:
    """One cell of the table: a kind of prompt and a number of streams sent at once."""

    prompts: str  # one of PROMPT_KINDS
    streams: int

    @property
    def label(self) -> str:
        return {"unique": "unique per request", "shared": "one shared prompt",
                "seeded": "shared prompt, `seed` set"}[self.prompts]


@dataclass(frozen=True)
class StreamWork:
    """What every request of the comparison asks for: `max_tokens` tokens at `temperature`.

    `ban` holds token ids sent with logit_bias -100 (the end-of-turn ids), so that every answer runs to
    `max_tokens` and every contender does the same amount of work whatever it samples."""

    max_tokens: int = 64
    temperature: float = 0.7
    ban: tuple[int, ...] = ()


def cells(kinds: tuple[str, ...] = PROMPT_KINDS, counts: tuple[int, ...] = STREAM_COUNTS) -> list[Cell]:
    unknown = [k for k in kinds if k not in PROMPT_KINDS]
    if unknown:
        raise ValueError(f"unknown prompt kind(s) {unknown}; known: {', '.join(PROMPT_KINDS)}")
    if any(n < 1 for n in counts):
        raise ValueError(f"stream counts must be at least 1, got {counts}")
    return [Cell(kind, n) for kind in kinds for n in counts]


def unique_question(number: int) -> str:
    """A user message of its own for every number: the number first, so that two messages part ways at
    their first token after the chat template's shared start."""
    a = _ADJECTIVES[number % len(_ADJECTIVES)]
    c = _CHARACTERS[(number // len(_ADJECTIVES)) % len(_CHARACTERS)]
    p = _PLACES[(number // (len(_ADJECTIVES) * len(_CHARACTERS))) % len(_PLACES)]
    return f"Story number {number}: write a long story about a {a} {c} in {p}."


def request_number(cell_index: int, round_no: int, position: int, per_cell: int = 2000, per_round: int = 100) -> int:
    """A number for each request of a run, different for every (cell, round, position) while
    position < per_round and round_no < per_cell // per_round: where `unique` prompts come from."""
    if not 0 <= position < per_round or not 0 <= round_no < per_cell // per_round:
        raise ValueError(f"position {position} or round {round_no} out of range")
    return cell_index * per_cell + round_no * per_round + position


def bodies(cell: Cell, cell_index: int, round_no: int, model: str, work: StreamWork) -> list[dict[str, Any]]:
    """The `cell.streams` request bodies sent at once in round `round_no` of the cell."""
    out = []
    for position in range(cell.streams):
        number = request_number(cell_index, round_no, position)
        question = unique_question(number) if cell.prompts == "unique" else SHARED_QUESTION
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "max_tokens": work.max_tokens,
            "temperature": work.temperature,
            "stream": True,
            # The server's own count of generated tokens: sampled text does not always tokenize back to
            # the same number of tokens.
            "stream_options": {"include_usage": True},
        }
        if cell.prompts == "seeded":
            body["seed"] = number
        if work.ban:
            body["logit_bias"] = {str(t): -100.0 for t in work.ban}
        out.append(body)
    return out


def embedding_inputs(client: int, request: int, per_request: int = 8) -> list[str]:
    """Short inputs (a sentence each), different for every client and request."""
    start = (client * 1000 + request) * per_request
    return [unique_question(start + i) for i in range(per_request)]
