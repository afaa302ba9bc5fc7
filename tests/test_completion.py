"""The bridge's futures (``Completion``): asyncio's future protocol, and waiters resumed in the
very turn that drains the bridge."""

from __future__ import annotations

import asyncio

import pytest
import rloop
from cellgate._core import Bridge, Completion

LOOPS = {"asyncio": asyncio.new_event_loop, "rloop": rloop.new_event_loop}
#: rloop 0.5 leaves its self-pipe sockets to the garbage collector when a loop closes.
RLOOP_LEAK = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(params=["asyncio", pytest.param("rloop", marks=RLOOP_LEAK)])
def loop(request):
    loop = LOOPS[request.param]()
    yield loop
    loop.close()


@pytest.fixture
def bridge(loop):
    bridge = Bridge(loop)
    loop.add_reader(bridge.fileno(), bridge.drain)
    yield bridge
    loop.remove_reader(bridge.fileno())


def test_awaited_alone_and_gathered(loop, bridge):
    async def main():
        assert await bridge.noop() is None
        return await asyncio.gather(*(bridge.noop() for _ in range(100)))

    assert loop.run_until_complete(main()) == [None] * 100


def test_the_waiting_task_resumes_inside_the_drain_that_resolves_it(loop):
    bridge = Bridge(loop)  # drained by hand below, not by a reader
    resumed: list[str] = []

    async def waiter():
        await bridge.noop()
        resumed.append("waiter")

    def drain_then_look():
        bridge.drain()
        resumed.append("after drain")

    async def main():
        task = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)  # the waiter now waits on its completion
        assert not resumed
        loop.call_soon(drain_then_look)
        await task

    loop.run_until_complete(main())
    # An asyncio.Future would have resumed the waiter one loop iteration after the drain.
    assert resumed == ["waiter", "after drain"]


def test_future_protocol_before_and_after_the_result(loop, bridge):
    async def main():
        completion = bridge.noop()
        assert asyncio.isfuture(completion)
        assert completion.get_loop() is loop
        assert not completion.done() and not completion.cancelled()
        with pytest.raises(asyncio.InvalidStateError):
            completion.result()
        with pytest.raises(asyncio.InvalidStateError):
            completion.exception()
        seen = []
        completion.add_done_callback(seen.append)
        assert completion.remove_done_callback(seen.append) == 1
        assert completion.remove_done_callback(seen.append) == 0
        await completion
        assert completion.done() and completion.result() is None
        assert completion.exception() is None
        completion.add_done_callback(seen.append)  # after the result: scheduled on the loop
        assert seen == []
        await asyncio.sleep(0)
        assert seen == [completion]
        assert completion.cancel() is False
        assert "finished" in repr(completion)

    loop.run_until_complete(main())


def test_cancelled_by_a_timeout_and_by_its_task(loop):
    async def main():
        never = Completion(loop)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(never, 0.01)
        assert never.cancelled()
        with pytest.raises(asyncio.CancelledError):
            never.result()

        async def wait(completion):
            return await completion

        other = Completion(loop)
        task = asyncio.ensure_future(wait(other))
        await asyncio.sleep(0)
        task.cancel("client gone")
        with pytest.raises(asyncio.CancelledError):
            await task
        assert other.cancelled()

    loop.run_until_complete(main())


def test_a_raising_done_callback_reaches_the_loops_exception_handler(loop):
    bridge = Bridge(loop)
    caught = []
    # rloop calls the handler with the context alone, asyncio with the loop first.
    loop.set_exception_handler(lambda *args: caught.append(args[-1]))

    def boom(_completion):
        raise RuntimeError("boom")

    async def main():
        completion = bridge.noop()
        completion.add_done_callback(boom)
        loop.call_soon(bridge.drain)
        await asyncio.sleep(0.01)
        assert completion.done()

    loop.run_until_complete(main())
    assert [type(c["exception"]) for c in caught] == [RuntimeError]
