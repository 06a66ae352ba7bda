"""``python -m chatsite.daphne [daphne's arguments]``: daphne, with its own cap on
a received WebSocket message (and frame) set to chatsite's frame limit.

The limit (``CHATSITE_MAX_FRAME_BYTES``) follows ``CHATSITE_MAX_PROMPT_CHARS``, so
no env file can hand it to a bare ``daphne`` command line; this puts it there:
one limit, enforced by daphne before a byte of a larger frame is buffered
(docs/protocol.md says what a client gets above it). ``manage.py serve`` and the
systemd unit start daphne this way; an argument given here wins over it.
"""

from __future__ import annotations

import os
import sys

from daphne.cli import CommandLineInterface
from django.conf import settings


def frame_limit_args() -> list[str]:
    size = str(settings.CHATSITE_MAX_FRAME_BYTES)
    return ["--websocket-max-message-size", size, "--websocket-max-frame-size", size]


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    # argparse keeps the last of a repeated option: the caller's own come after.
    CommandLineInterface().run([*frame_limit_args(), *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
