from django.urls import path

from . import protocol
from .consumers import ChatConsumer

websocket_urlpatterns = [path(protocol.PATH.lstrip("/"), ChatConsumer.as_asgi())]
