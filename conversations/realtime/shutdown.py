"""SIGTERM: save every live reply as ``interrupted`` before the process goes.

The server's own shutdown path cannot be relied on to finish (daphne 4.2.3,
sent SIGTERM with a WebSocket open, fails in its shutdown code and then crashes
during interpreter cleanup), so the handler does not depend on it: it cancels
every live reply, waits (bounded) until each has written its terminal state and
told its viewers, then ends the process itself.

It is installed where the process registers itself as a worker
(:func:`conversations.realtime.cluster.ensure_started`), which also says what
else to wait for: the frames on their way to viewers in other processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import weakref
from collections.abc import Awaitable, Callable

from django.conf import settings

from conversations.realtime.outbox import outbox
from conversations.realtime.registry import registry

log = logging.getLogger(__name__)
GRACE_SECONDS = 10.0
_installed: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # loops it is on


Drain = Callable[[], Awaitable[None]]


def install_sigterm_handler(*, drain: Drain | None = None) -> None:
    """Install the handler on the running loop (once per loop). On SIGTERM it
    interrupts every live reply, waits until this process's sockets were handed
    their last frames, and then for ``drain`` (if given)."""
    loop = asyncio.get_running_loop()
    if loop in _installed or not settings.CHATSITE_SIGTERM_HANDLER:
        return
    try:
        loop.add_signal_handler(signal.SIGTERM, _on_sigterm, loop, drain)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        return
    _installed.add(loop)


def _on_sigterm(loop: asyncio.AbstractEventLoop, drain: Drain | None) -> None:
    log.warning("SIGTERM: interrupting %d live replies and exiting", len(registry))
    _exiting.add(loop.create_task(_interrupt_and_exit(drain)))


_exiting: set[asyncio.Task[None]] = set()  # held, so that it is not collected


async def _interrupt(drain: Drain | None) -> None:
    await registry.stop_all()
    await outbox.flush()  # the final frames, handed to this process's sockets
    if drain is not None:
        await drain()
    await _io_turn()


def _io_turn() -> asyncio.Future[None]:
    """Resolves after the event loop's next poll for I/O has run its callbacks.

    The server buffers what it is handed (Twisted under daphne writes a
    socket's bytes when the loop finds the socket writable), so the process
    ends only after that poll: a callback queued now runs before the next poll,
    and the one it queues runs after the poll's callbacks."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.call_soon(loop.call_soon, done.set_result, None)
    return done


async def _interrupt_and_exit(drain: Drain | None) -> None:
    code = 0
    try:
        await asyncio.wait_for(_interrupt(drain), GRACE_SECONDS)
    except Exception:
        log.exception("interrupting live replies failed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)
