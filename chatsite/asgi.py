"""ASGI entry point: ``daphne chatsite.asgi:application``."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from conversations.middleware import OriginValidator, WebSocketAuthStack  # noqa: E402
from conversations.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginValidator(WebSocketAuthStack(URLRouter(websocket_urlpatterns))),
    }
)

from conversations.providers import get_providers  # noqa: E402

get_providers()  # imports the provider modules (and their HTTP stack) now, not on the first reply

# Everything loaded so far lives as long as the process: move it out of the
# cyclic garbage collector's sight, so that a full collection under load scans
# only the objects of live requests and replies (it took 60-85 ms per full
# collection before, stalling every stream; see docs/benchmarks.md).
gc.freeze()
