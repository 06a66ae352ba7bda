from django.urls import path

from conversations.realtime import protocol
from conversations.realtime.consumers import ChatConsumer

websocket_urlpatterns = [path(protocol.PATH.lstrip("/"), ChatConsumer.as_asgi())]
