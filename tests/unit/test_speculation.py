"""Issue 32: prompt lookup (ngram.py) and the plan that sizes drafts (speculation.py)."""

from __future__ import annotations

from server.engine.worker.ngram import NgramIndex
from server.engine.worker.speculation import Acceptance, Guess, Shadow, StepCost, bucket_of, plan


def indexed(tokens: list[int], size: int = 2) -> NgramIndex:
    index = NgramIndex(size)
    index.sync(tokens[:-1], tokens[-1])
    return index


def test_lookup_continues_the_earlier_occurrence_with_the_longest_agreement() -> None:
    # "5 1 2" occurred twice; the one preceded by "9 5" agrees longer with the end "9 5 1 2".
    tokens = [7, 5, 1, 2, 30, 31, 9, 5, 1, 2, 40, 41, 42, 8, 9, 5, 1, 2]
    draft, match = indexed(tokens).lookup(3)
    assert draft == [40, 41, 42]
    assert match == 4
    assert indexed(tokens).lookup(10)[0] == [40, 41, 42, 8, 9, 5, 1, 2]  # up to the present end


def test_lookup_without_an_earlier_occurrence_guesses_nothing() -> None:
    assert indexed([1, 2, 3, 4, 5]).lookup(4) == ([], 0)
    assert indexed([1, 2]).lookup(4) == ([], 0)
    assert indexed([1, 2, 3, 1, 2]).lookup(0) == ([], 0)


def test_sync_grows_with_the_sequence_as_the_decode_loop_extends_it() -> None:
    index = NgramIndex(2)
    history = [3, 4, 5, 6]
    index.sync(history, 3)  # next token 3
    assert index.lookup(4) == ([], 0)
    history += [3]
    index.sync(history, 4)  # "3 4" again
    assert index.lookup(2)[0] == [5, 6]
    assert index.tokens == [3, 4, 5, 6, 3, 4]


def test_acceptance_learns_long_runs_and_early_failures_per_bucket() -> None:
    acceptance = Acceptance()
    fresh = acceptance.chances(0, 4)
    assert all(0 < c < 1 for c in fresh) and fresh == sorted(fresh, reverse=True)
    for _ in range(30):
        acceptance.record(bucket_of(40), 8, 8)  # long agreement: always right
        acceptance.record(bucket_of(2), 4, 0)  # short agreement: wrong at once
    assert acceptance.chances(bucket_of(40), 8)[-1] > 0.9
    assert acceptance.chances(bucket_of(2), 1)[0] < 0.1
    # Untried positions of a reliable bucket borrow its overall hazard instead of the prior.
    assert acceptance.chances(bucket_of(40), 16)[-1] > 0.8


def test_step_cost_single_token_apart_and_a_line_from_two_tokens_on() -> None:
    cost = StepCost()
    for size, seconds in [(1, 0.010), (2, 0.018), (4, 0.028), (8, 0.048), (16, 0.088)]:
        cost.observe(size, seconds)
    assert cost(1) == 0.010
    assert 0.045 < cost(8) < 0.052 and cost(32) > cost(16) > cost(8)


def test_plan_drafts_only_where_the_expected_speed_gain_pays() -> None:
    cost = StepCost()
    for size, seconds in [(1, 0.010), (2, 0.018), (4, 0.028), (8, 0.045), (16, 0.075)]:
        cost.observe(size, seconds)
    sure, unsure = Acceptance(), Acceptance()
    for _ in range(40):
        sure.record(5, 16, 16)
        unsure.record(5, 16, 0)
    guess = Guess(list(range(16)), 5)
    assert plan([guess], sure, cost, room=512) == [16]
    assert plan([guess], unsure, cost, room=512) == [0]
    assert plan([None], sure, cost, room=512) == [0]
    assert sum(plan([guess, guess], sure, cost, room=10)) <= 8  # the batch's room bounds the drafts
    # Two sequences: drafts go where they are likely right.
    assert plan([guess, Guess(list(range(16)), 1)], _two_buckets(), cost, room=512)[1] == 0


def _two_buckets() -> Acceptance:
    acceptance = Acceptance()
    for _ in range(40):
        acceptance.record(5, 16, 16)
        acceptance.record(1, 16, 0)
    return acceptance


def test_shadow_compares_a_guess_with_what_was_written() -> None:
    shadow = Shadow(Guess([1, 2, 3], 0))
    assert not shadow.feed(1) and not shadow.feed(2)
    assert shadow.feed(9) and shadow.right == 2
    whole = Shadow(Guess([4, 5], 0))
    assert not whole.feed(4) and whole.feed(5) and whole.right == 2


def test_a_prediction_is_looked_up_before_the_history_and_never_drafts_past_its_end() -> None:
    index = NgramIndex(2, prediction=[10, 11, 12, 13, 14])
    index.sync([1, 2, 10], 11)  # the history now ends with "10 11", which the prediction holds
    assert index.lookup(8) == ([12, 13, 14], 2)
    index.sync([1, 2, 10, 11, 12, 13], 14)
    assert index.lookup(8) == ([], 0)  # "13 14" ends the prediction: nothing after it to guess


def test_an_answer_that_follows_its_prediction_is_drafted_the_rest_of_it() -> None:
    from server.engine.worker.speculation import PREDICTION_BUCKET, PredictionTrack

    words = {b"a": 1, b"b": 2, b"\n\n": 3, b"\n": 4, b"c": 5}

    def tokenize(text: bytes) -> list[int]:  # greedy over the toy vocabulary, longest piece first
        out, at = [], 0
        while at < len(text):
            piece = next(p for p in sorted(words, key=len, reverse=True) if text.startswith(p, at))
            out.append(words[piece])
            at += len(piece)
        return out

    track = PredictionTrack(b"ab\n\nc", tokenize)
    assert track.guess(8) == [1, 2, 3, 5]
    track.wrote(b"a")
    assert track.guess(8) == [2, 3, 5]
    track.wrote(b"b")
    track.wrote(b"\n")  # the model writes the two newlines as two tokens: still the same text
    assert track.following and track.guess(8) == [4, 5]
    track.wrote(b"x")
    assert not track.following and track.guess(8) == []
    assert Acceptance().chances(PREDICTION_BUCKET, 4)[-1] > 0.9  # trusted until it proves wrong
