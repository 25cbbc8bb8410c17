"""Micro-batching: concurrent calls in one loop turn share one batch; failures reach callers."""

from __future__ import annotations

import asyncio

import pytest

from service.batching import MicroBatcher


def test_calls_of_one_turn_share_a_batch_and_get_their_own_results():
    batches: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        batches.append(items)
        await asyncio.sleep(0)
        return [2 * i for i in items]

    async def scenario():
        batcher = MicroBatcher(double)
        first = await asyncio.gather(*(batcher(i) for i in range(10)))
        second = await batcher(7)  # alone: a batch of one
        return first, second

    first, second = asyncio.run(scenario())
    assert first == [2 * i for i in range(10)] and second == 14
    assert batches == [list(range(10)), [7]]


def test_batches_never_exceed_max_size():
    sizes: list[int] = []

    async def echo(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    async def scenario():
        batcher = MicroBatcher(echo, max_size=4)
        return await asyncio.gather(*(batcher(i) for i in range(10)))

    assert asyncio.run(scenario()) == list(range(10))
    assert max(sizes) <= 4 and sum(sizes) == 10


def test_a_failing_batch_fails_every_caller_and_the_next_batch_works():
    calls = 0

    async def flaky(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return items

    async def scenario():
        batcher = MicroBatcher(flaky)
        failed = await asyncio.gather(*(batcher(i) for i in range(3)), return_exceptions=True)
        return failed, await batcher(5)

    failed, recovered = asyncio.run(scenario())
    assert all(isinstance(f, ConnectionError) for f in failed) and recovered == 5


def test_wrong_number_of_results_is_an_error_not_a_silent_mismatch():
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    async def scenario():
        batcher = MicroBatcher(short)
        return await asyncio.gather(batcher(1), batcher(2), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(scenario()))


def test_a_cancelled_caller_does_not_break_the_others():
    async def slow(items: list[int]) -> list[int]:
        await asyncio.sleep(0.05)
        return items

    async def scenario():
        batcher = MicroBatcher(slow)
        doomed = asyncio.ensure_future(batcher(1))
        kept = asyncio.ensure_future(batcher(2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        return await kept, doomed

    kept, doomed = asyncio.run(scenario())
    assert kept == 2 and doomed.cancelled()


def test_max_size_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_size=0)
