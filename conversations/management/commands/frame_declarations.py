"""``python3 manage.py frame_declarations [--check]``: the page's copy of the frame declarations.

The page validates every frame it receives (``static/chat/frames.js``) against
``conversations.realtime.protocol.SERVER_FRAMES``. It reads them from
``static/chat/frame_declarations.js``, which this command generates: a plain ES
module, so it is served, hashed and cached like the other modules, with no
request or template of its own. Run it after changing a declaration; a test
(and ``--check``) fails while the file is out of date.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from conversations.realtime import protocol


def declarations_path() -> Path:
    return Path(settings.BASE_DIR) / "static" / "chat" / "frame_declarations.js"


def declarations_module() -> str:
    """The text of ``static/chat/frame_declarations.js`` for the current declarations."""
    lines = []
    for kind, fields in protocol.server_frames_json().items():
        lines.append(f"  {json.dumps(kind)}: {{")
        for name, spec in fields.items():
            lines.append(f"    {json.dumps(name)}: {json.dumps(spec, ensure_ascii=False)},")
        lines.append("  },")
    body = "{\n" + "\n".join(lines) + "\n}"
    return (
        "// Generated from conversations/realtime/protocol.py (SERVER_FRAMES) by\n"
        "// `python3 manage.py frame_declarations`: do not edit; a test checks it is current.\n"
        "// type -> {field: {type, nullable?, values?, fields?, only_when?}}\n"
        f"export const SERVER_FRAMES = {body};\n"
    )


class Command(BaseCommand):
    help = "Write static/chat/frame_declarations.js from the protocol's server frame declarations."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true", help="only check that the file is current")

    def handle(self, *args: Any, check: bool = False, **options: Any) -> None:
        path = declarations_path()
        text = declarations_module()
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if check:
            if current != text:
                raise CommandError(f"{path} is out of date: run python3 manage.py frame_declarations")
            return
        if current != text:
            path.write_text(text, encoding="utf-8")
            self.stdout.write(f"wrote {path}")
        else:
            self.stdout.write(f"{path} is current")
