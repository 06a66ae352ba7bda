"""SIGTERM: save every live reply as ``interrupted`` before the process goes.

The server's own shutdown path cannot be relied on to finish (daphne 4.2.3,
sent SIGTERM with a WebSocket open, fails in its shutdown code and then crashes
during interpreter cleanup), so the handler does not depend on it: it cancels
every live reply, waits (bounded) until each has written its terminal state and
told its viewers, then ends the process itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from django.conf import settings

from conversations.realtime.replies import registry

log = logging.getLogger(__name__)
GRACE_SECONDS = 10.0
_installed: set[int] = set()


def install_sigterm_handler() -> None:
    """Install the handler on the running loop (once per loop)."""
    loop = asyncio.get_running_loop()
    if id(loop) in _installed or not settings.CHATSITE_SIGTERM_HANDLER:
        return
    try:
        loop.add_signal_handler(signal.SIGTERM, _on_sigterm, loop)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        return
    _installed.add(id(loop))


def _on_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    log.warning("SIGTERM: interrupting %d live replies and exiting", len(registry))
    loop.create_task(_interrupt_and_exit())


async def _interrupt_and_exit() -> None:
    code = 0
    try:
        await asyncio.wait_for(registry.stop_all(), GRACE_SECONDS)
        # Give the socket writers one turn to flush the final frames.
        await asyncio.sleep(0.05)
    except Exception:
        log.exception("interrupting live replies failed")
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)
