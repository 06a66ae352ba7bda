"""The page's ES modules under content-hashed names, without rewriting them.

In production every static file is collected under a content-hashed name (so it
can be cached for a year). Rewriting the ``import`` statements inside the modules
by regular expression, as Django's manifest storage can, is not exact: a comment
or a string that looks like an import is rewritten too, and one wrong name leaves
the whole page dead. So the modules keep their plain relative imports, and every
page carries an import map from each module's plain URL to its hashed URL: the
browser resolves ``./ui.js`` to ``/static/chat/ui.js`` as usual, and the map sends
it to ``/static/chat/ui.3f2a….js``. With DEBUG on the names are not hashed and
the map is empty.

The map is an inline script, so the Content Security Policy allows it by its
SHA-256 hash (:func:`script_hash`), not by ``'unsafe-inline'``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from urllib.parse import quote

from django import template
from django.contrib.staticfiles.finders import FileSystemFinder
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.signals import setting_changed
from django.utils.safestring import SafeString, mark_safe

MODULE_SUFFIXES = (".js", ".mjs")


def module_paths() -> list[str]:
    """The project's own JavaScript files (``static/``), as static paths."""
    found = {
        path.replace("\\", "/")
        for path, _storage in FileSystemFinder().list(ignore_patterns=[])
        if path.endswith(MODULE_SUFFIXES)
    }
    return sorted(found)


@functools.cache
def import_map_json() -> str:
    """``{"imports": {plain URL: hashed URL}}`` for every module whose name is hashed."""
    base = staticfiles_storage.base_url
    imports = {}
    for path in module_paths():
        plain = base + quote(path)
        served = staticfiles_storage.url(path)
        if served != plain:
            imports[plain] = served
    # Compact and sorted: the bytes must be exactly the ones the hash is taken of.
    return json.dumps({"imports": imports}, separators=(",", ":"), sort_keys=True)


def import_map_tag() -> SafeString:
    # json.dumps escapes nothing HTML cares about in these URLs except "<", which a
    # static path never contains; refuse rather than emit a broken script.
    text = import_map_json()
    if "<" in text:
        raise ValueError("a static path contains '<'")
    return mark_safe(f'<script type="importmap">{text}</script>')


def script_hash() -> str:
    """The CSP source that allows exactly the import map: ``'sha256-…'``."""
    digest = hashlib.sha256(import_map_json().encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def _reset(*, setting: str, **kwargs: object) -> None:
    if setting in {"STORAGES", "STATIC_URL", "STATIC_ROOT", "STATICFILES_DIRS"}:
        import_map_json.cache_clear()


setting_changed.connect(_reset)

#: ``{% load importmap %}{% importmap %}`` in a template (registered in settings.TEMPLATES).
register = template.Library()
register.simple_tag(import_map_tag, name="importmap")

__all__ = ["import_map_json", "import_map_tag", "module_paths", "script_hash"]
