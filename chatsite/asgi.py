"""ASGI entry point: ``daphne chatsite.asgi:application``."""

import gc
import logging
import os
import sys

from django.core.asgi import get_asgi_application

log = logging.getLogger("chatsite")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from conversations.realtime import cluster  # noqa: E402
from conversations.realtime.middleware import OriginValidator, WebSocketAuthStack  # noqa: E402
from conversations.realtime.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginValidator(WebSocketAuthStack(URLRouter(websocket_urlpatterns))),
    }
)


class Application:
    """The router, with this process's worker (the sweep of dead processes'
    replies, the heartbeat, the command listener) started with the server.

    Under daphne it is already running before the first connection
    (``cluster.start_with_server``); servers that speak the ASGI lifespan
    protocol start it on ``lifespan.startup``; anything else (the tests' ASGI
    communicators) on its first connection.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if cluster.current() is None:
            try:
                await cluster.ensure_started()
            except Exception as exc:  # an unreachable database: the request says so itself
                log.warning("starting the worker failed (%s)", type(exc).__name__)
        await self.app(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await cluster.ensure_started()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Application(application)
cluster.start_with_server()


def _close_oversized_frames_with_1009() -> None:
    """Under daphne, a frame over its ``--websocket-max-message-size`` (which
    ``manage.py serve`` and the systemd unit set to CHATSITE_MAX_FRAME_BYTES) drops
    the TCP connection: the client sees 1006 and no reason. Have it close the
    socket properly instead: code 1009 (message too big), with a reason that names
    the limit. The server reads the app before it opens its listening socket."""
    ws_protocol = sys.modules.get("daphne.ws_protocol")
    if ws_protocol is None or getattr(ws_protocol.WebSocketFactory, "_chatsite_clean_close", False):
        return
    reset = ws_protocol.WebSocketFactory.resetProtocolOptions

    def resetProtocolOptions(self) -> None:
        reset(self)
        self.failByDrop = False  # a failed connection gets a close frame, then ends

    ws_protocol.WebSocketFactory.resetProtocolOptions = resetProtocolOptions
    ws_protocol.WebSocketFactory._chatsite_clean_close = True


_close_oversized_frames_with_1009()

from conversations.providers import get_providers  # noqa: E402

get_providers()  # imports the provider modules (and their HTTP stack) now, not on the first reply

# Everything loaded so far lives as long as the process: move it out of the
# cyclic garbage collector's sight, so that a full collection under load scans
# only the objects of live requests and replies (it took 60-85 ms per full
# collection before, stalling every stream; see docs/benchmarks.md).
gc.freeze()
