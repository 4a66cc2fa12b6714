"""The Retry-After estimate: from the alias's measured pace and the work ahead, in whole seconds, bounded."""

from __future__ import annotations

import asyncio

import pytest

from server.errors import QueueFullError
from server.pool import RETRY_AFTER_MAX, ModelPool, Pace
from server.pool.pace import Running
from tests.unit.test_pool import Loader, use
from tests.unit.test_pool_policy import Events, busy, registry, spec, until


def measured(token_seconds: float, first: float = 0.1, tokens: int = 101) -> Pace:
    """A pace that learnt one request: `tokens` tokens, the first after `first` s, then `token_seconds` each."""
    pace = Pace()
    pace.learn([(tokens, first, (tokens - 1) * token_seconds)])
    return pace


def test_one_slot_busy_on_a_long_answer_waits_for_its_remaining_tokens() -> None:
    pace = measured(0.015)
    run = pace.start(max_tokens=400)
    # 0.1 s to the first token + 400 x 15 ms = 6.1 s, 1 s of it done: 5.1 s left -> 6.
    assert pace.retry_after(slots=1, queued=0, now=run.since + 1.0) == 6
    assert pace.retry_after(slots=1, queued=0, now=run.since + 3.0) == 4  # 3.1 s left


def test_a_request_running_past_its_estimate_needs_at_least_half_the_time_it_took() -> None:
    pace = measured(0.015)  # 400 tokens: 6.1 s
    run = pace.start(max_tokens=400)
    assert pace.retry_after(1, 0, now=run.since + 4.0) == 3  # 2.1 s left by the pace, but 4 s in: 2 s at least
    assert pace.retry_after(1, 0, now=run.since + 10.0) == 5  # the pace was wrong (a busy machine): 10 / 2
    assert pace.retry_after(1, 0, now=run.since + 1.0) == 6  # early on, the pace decides: 5.1 s


def test_the_first_measurement_replaces_the_prior_and_later_ones_move_the_average() -> None:
    pace = Pace()
    slow = pace.seconds(400)
    pace.learn([(101, 0.1, 1.0)])  # 10 ms a token
    assert pace.token_seconds == pytest.approx(0.01) and pace.first_token_seconds == pytest.approx(0.1)
    assert pace.seconds(400) < slow
    pace.learn([(101, 0.1, 3.0)])  # 30 ms a token: the average moves toward it, not onto it
    assert 0.01 < pace.token_seconds < 0.03
    assert pace.answer_tokens == 101


def test_nothing_generated_teaches_nothing() -> None:
    pace = Pace()
    pace.learn([(0, 0.0, 0.0)])
    pace.learn([])
    assert pace.measured == 0 and pace.token_seconds == Pace().token_seconds


def test_without_max_tokens_a_running_request_is_a_typical_answer() -> None:
    pace = measured(0.01, tokens=301)  # answers of 301 tokens: 0.1 + 301 x 10 ms = 3.11 s
    run = pace.start(max_tokens=None)
    assert pace.retry_after(1, 0, now=run.since) == 4
    short = measured(0.01, tokens=51)
    run = short.start(max_tokens=None)
    assert short.retry_after(1, 0, now=run.since) == 1  # 0.61 s: at least 1
    assert short.retry_after(1, 0, now=run.since + 8.0) == 4  # a long one after all: 8 / 2


def test_the_first_slot_to_free_counts_and_queued_requests_take_slots_in_turn() -> None:
    pace = measured(0.01, tokens=201)  # a typical answer: 0.1 + 2.01 = 2.11 s
    now = 100.0
    pace.running = {Running(1000, now), Running(300, now)}  # 10.1 s and 3.1 s
    assert pace.retry_after(slots=2, queued=0, now=now) == 4  # the 300-token one frees its slot first
    assert pace.retry_after(slots=2, queued=1, now=now) == 6  # one ahead takes it: 3.1 + 2.11
    assert pace.retry_after(slots=2, queued=3, now=now) == 10  # 3.1 + 3 x 2.11 = 9.43 < 10.1


def test_bounded_to_60_seconds_and_a_loading_slot_counts_as_a_whole_answer() -> None:
    pace = measured(0.5)
    pace.start(max_tokens=100_000)
    assert pace.retry_after(1, 0) == RETRY_AFTER_MAX
    assert pace.retry_after(1, 10_000) == RETRY_AFTER_MAX  # many ahead: stops counting at the cap
    empty = measured(0.01, tokens=201)
    assert empty.retry_after(slots=1, queued=0) == 3  # no request started yet (loading): 2.11 s


def test_the_pool_answers_429_with_the_estimate_and_forgets_requests_that_ended() -> None:
    async def scenario() -> None:
        events = Events()
        pool = ModelPool(registry({"a": spec(max_queue=0)}), Loader(), events=events)
        await use(pool, "a")  # loads it
        pool.learn("a", [(101, 0.05, 1.0)])  # 10 ms a token
        lease = await pool.acquire("a", max_tokens=400)  # 0.05 + 4 s
        with pytest.raises(QueueFullError) as refused:
            await use(pool, "a")
        assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "5"}
        assert ("rejected", "a", "5") in events.seen
        lease.release()
        await until(lambda: busy(pool, "a", running=0))
        holder = asyncio.create_task(use(pool, "a", hold=0.3))  # no max_tokens: a typical answer of 101
        await until(lambda: busy(pool, "a"))
        with pytest.raises(QueueFullError) as refused:
            await use(pool, "a")
        assert refused.value.headers == {"Retry-After": "2"}  # 0.05 + 1.01 s
        await holder

    asyncio.run(scenario())
