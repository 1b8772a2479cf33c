"""The per-turn share of the sockets' work (`TurnShare`), on a real asyncio loop: renewed
only after it ran half down, so an idle gateway's few pongs a turn schedule nothing.
(The bound it keeps, floods spread over turns, is proved in test_websocket_frames.py.)"""

from __future__ import annotations

import asyncio

from tocsin.gateway.websocket import TurnShare


async def test_turns_that_spend_little_schedule_no_renewal() -> None:
    loop = asyncio.get_running_loop()
    share = TurnShare(per_turn=100, per_call=8)
    scheduled: list[object] = []
    original = loop.call_soon

    def spy(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        if getattr(callback, "__self__", None) is share:
            scheduled.append(callback)
        return original(callback, *args, **kwargs)

    loop.call_soon = spy  # type: ignore[method-assign]
    try:
        for _ in range(40):  # an idle gateway: a pong or so a turn
            assert share.share(loop) == 8
            share.spend(1)
            await asyncio.sleep(0)
    finally:
        del loop.call_soon  # type: ignore[method-assign]
    # Renewed once, when the share ran half down (at the 50th unit), not every turn.
    assert share.left == 60
    assert scheduled == []
    for _ in range(20):
        share.spend(1)
    assert share.left == 40
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert share.left == 100
