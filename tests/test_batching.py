"""The adaptive batcher on its own, on a real event loop: who shares a batch, where batches
run, and what a failing batch or a full queue does to the requests in it.

The "model" is a plain function of the stacked feed that records each batch it saw and the
thread it ran on; it doubles its input, so every answer shows whose input it came from.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import Batcher, InferenceFailed
from service.config import BatchingConfig
from service.errors import Unavailable


class Model:
    def __init__(self, fail_on: float | None = None) -> None:
        self.batches: list[tuple[int, str]] = []  # (items, thread name)
        self.fail_on = fail_on

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["x"]
        self.batches.append((len(x), threading.current_thread().name))
        if self.fail_on is not None and (x == self.fail_on).any():
            raise ValueError("the model cannot take this input")
        return {"y": x * 2}


def feed(*values: float, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


def batcher(model: Model, **settings) -> Batcher:
    offload_from = settings.pop("offload_from", None)
    return Batcher(model, BatchingConfig(**settings), offload_from=offload_from)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_a_batch_and_get_their_own_answers() -> None:
    model = Model()
    b = batcher(model)

    async def main():
        return await asyncio.gather(*(b.infer(feed(i)) for i in range(10)))

    answers = run(main())
    for i, ran in enumerate(answers):
        np.testing.assert_array_equal(ran.outputs["y"], feed(i)["x"] * 2)
        assert ran.batch_items == 10
    assert model.batches == [(10, threading.current_thread().name)]  # inline, one batch


def test_a_lone_request_runs_at_once_and_batches_never_exceed_the_limit() -> None:
    model = Model()
    # A minute's wait: a lone request that waited for company could not finish in the 30 s
    # below however busy the machine, and one that runs at once takes microseconds.
    b = batcher(model, max_batch_size=4, max_wait_ms=60_000)

    async def main():
        started = time.perf_counter()
        lone = await asyncio.wait_for(b.infer(feed(1)), timeout=30)
        lone_s = time.perf_counter() - started
        many = await asyncio.gather(*(b.infer(feed(i, i)) for i in range(5)))  # 2 items each
        return lone, lone_s, many

    lone, lone_s, many = run(main())
    assert lone_s < 30, f"a lone request took {lone_s:.3f} s; max_wait_ms is 60 s, limit 30 s"
    assert lone.batch_items == 1
    assert [items for items, _ in model.batches] == [1, 4, 4, 2]  # 2+2, never split
    for i, ran in enumerate(many):
        np.testing.assert_array_equal(ran.outputs["y"], feed(i, i)["x"] * 2)


def test_batching_off_runs_every_request_alone() -> None:
    model = Model()
    b = batcher(model, enabled=False)

    async def main():
        await asyncio.gather(*(b.infer(feed(i)) for i in range(3)))

    run(main())
    assert [items for items, _ in model.batches] == [1, 1, 1]


def test_requests_of_different_shapes_do_not_share_a_batch() -> None:
    model = Model()
    b = batcher(model)

    async def main():
        return await asyncio.gather(
            b.infer(feed(1, width=3)), b.infer(feed(2, width=5)), b.infer(feed(3, width=3))
        )

    answers = run(main())
    assert [a.outputs["y"].shape for a in answers] == [(1, 3), (1, 5), (1, 3)]
    assert [a.batch_items for a in answers] == [1, 1, 1]  # the queue is taken in order


def test_big_batches_run_in_the_worker_thread_small_ones_inline() -> None:
    model = Model()
    b = batcher(model, offload_from=4)
    loop_thread = threading.current_thread().name

    async def main():
        await b.infer(feed(1))  # 1 item: inline
        await asyncio.gather(*(b.infer(feed(i)) for i in range(6)))  # 6 items: offloaded
        await b.infer(feed(1, 2, 3))  # 3 items: inline

    run(main())
    b.close()
    assert [items for items, _ in model.batches] == [1, 6, 3]
    threads = [thread for _, thread in model.batches]
    assert threads[0] == threads[2] == loop_thread
    assert threads[1].startswith("inference")


def test_a_failing_batch_fails_only_the_request_at_fault() -> None:
    for offload_from in (None, 1):
        model = Model(fail_on=7.0)
        b = batcher(model, offload_from=offload_from)

        async def main(b=b):
            return await asyncio.gather(
                *(b.infer(feed(v)) for v in (1.0, 7.0, 3.0)), return_exceptions=True
            )

        first, bad, third = run(main())
        b.close()
        assert isinstance(bad, InferenceFailed)
        np.testing.assert_array_equal(first.outputs["y"], feed(1.0)["x"] * 2)
        np.testing.assert_array_equal(third.outputs["y"], feed(3.0)["x"] * 2)


def test_a_full_queue_refuses_at_once_with_retry_after() -> None:
    model = Model()
    b = batcher(model, max_queued_items=4)

    async def main():
        waiting = [asyncio.ensure_future(b.infer(feed(1, 2))) for _ in range(2)]
        await asyncio.sleep(0)  # both queued (4 items); their batch has not run yet
        with pytest.raises(Unavailable) as refused:
            await b.infer(feed(3))
        await asyncio.gather(*waiting)  # what was accepted is still answered
        return refused.value

    refused = run(main())
    assert refused.headers["Retry-After"] == "1"
    assert sum(items for items, _ in model.batches) == 4


def test_a_batch_waits_for_requests_still_being_decoded() -> None:
    model = Model()
    # The wait is a minute, not the 10 ms the late request takes, so that a busy machine's
    # scheduling delays still land inside it; the batch runs as soon as nothing is arriving.
    b = batcher(model, max_wait_ms=60_000)

    async def late_arrival():
        with b.arriving():  # decoding, as service/inference.py marks it
            await asyncio.sleep(0.01)
        return await b.infer(feed(2))

    async def main():
        return await asyncio.gather(b.infer(feed(1)), late_arrival())

    started = time.perf_counter()
    first, second = run(main())
    took = time.perf_counter() - started
    assert took < 30, f"the batch took {took:.3f} s: it waited for its deadline (limit 30 s)"
    assert first.batch_items == second.batch_items == 2
    assert [items for items, _ in model.batches] == [2]


def test_a_cancelled_request_leaves_its_batch() -> None:
    model = Model()
    b = batcher(model, max_wait_ms=60_000)  # held by arriving(), not by a deadline

    async def main():
        with b.arriving():  # holds the batch back while the first request is cancelled
            gone = asyncio.ensure_future(b.infer(feed(9)))
            await asyncio.sleep(0)
            gone.cancel()
            stays = asyncio.ensure_future(b.infer(feed(1)))
            await asyncio.sleep(0)
        return await stays

    ran = run(main())
    np.testing.assert_array_equal(ran.outputs["y"], feed(1)["x"] * 2)
    assert [items for items, _ in model.batches] == [1]
