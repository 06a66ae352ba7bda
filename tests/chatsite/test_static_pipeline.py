"""What production serves: static files collected with DEBUG off, and the pages that
name them. Every module import, every ``url()`` and every asset a page references
must resolve to a file that was collected, under the name the browser will ask for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.slow

STATIC_URL = "/static/"
# Module import statements, one per line as the project writes them (and as
# bundlers emit them): `import … from "x"`, `export … from "x"`, `import "x"`.
# Minified code can hold the word "import" inside strings, so only statements at
# the start of a line count; the browser tests load every module for real.
IMPORT_RE = re.compile(
    r"""^\s*(?:import|export)\b(?:[^;"'`]*?\bfrom)?\s*(?P<q>["'])(?P<spec>[^"'\n]+)(?P=q)""",
    re.MULTILINE,
)
CSS_URL_RE = re.compile(r"""url\(\s*(?P<q>["']?)(?P<url>[^"')]+)(?P=q)\s*\)""")

RENDER_PAGES = """
import json, sys
import django
django.setup()
from django.core.management import call_command
from django.contrib.auth import get_user_model
from django.test import Client
call_command("migrate", verbosity=0, interactive=False)
pages = {}
def page(r):
    return {"status": r.status_code, "html": r.content.decode(),
            "csp": r.headers.get("Content-Security-Policy")}
anonymous = Client()
for path in ["/accounts/login/", "/accounts/signup/"]:
    r = anonymous.get(path, secure=True)  # before any account exists: sign-up is open
    pages[path] = page(r)
user = get_user_model().objects.create_user("pipeline", password="pipeline-pw-12345")
client = Client()
client.force_login(user)
r = client.get("/", secure=True)
pages["/"] = page(r)
json.dump(pages, open(sys.argv[1], "w"))
"""


def _strip_js_comments(source: str) -> str:
    """Good enough for this project's own modules: drop // and /* */ comments that
    are not inside a string, so a commented-out import is not counted."""
    out, i, n = [], 0, len(source)
    quote: str | None = None
    while i < n:
        c = source[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(source[i + 1 : i + 2])
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
            out.append(c)
        elif source.startswith("//", i):
            i = source.find("\n", i)
            i = n if i < 0 else i
            continue
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.import_maps: list[str] = []
        self._in_import_map = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(STATIC_URL):
                self.urls.append(attrs[name])
        self._in_import_map = tag == "script" and attrs.get("type") == "importmap"

    def handle_data(self, data):
        if self._in_import_map:
            self.import_maps.append(data)

    def handle_endtag(self, tag):
        self._in_import_map = False


@pytest.fixture(scope="module")
def production(tmp_path_factory):
    """Collect static files and render the pages with DEBUG off, as `serve` does."""
    data = tmp_path_factory.mktemp("static-pipeline")
    env = {
        **os.environ,
        "CHATSITE_NO_BOOTSTRAP": "1",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "CHATSITE_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'db.sqlite3'}",
        "CHATSITE_LOCAL_MODEL": "off",
        "DJANGO_ALLOWED_HOSTS": "testserver",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
    }
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    out = data / "pages.json"
    subprocess.run([sys.executable, "-c", RENDER_PAGES, str(out)], cwd=ROOT, env=env, check=True)
    return data / "staticfiles", json.loads(out.read_text())


def _collected(root: Path, url: str) -> Path:
    assert url.startswith(STATIC_URL), url
    return root / url[len(STATIC_URL) :].split("?")[0]


def _import_map(page: dict) -> dict[str, str]:
    parser = _Assets()
    parser.feed(page["html"])
    assert len(parser.import_maps) == 1, "every page carries exactly one import map"
    return json.loads(parser.import_maps[0])["imports"]


def test_every_module_import_resolves_to_a_collected_file_through_the_import_map(production):
    root, pages = production
    mapping = _import_map(pages["/"])
    checked = 0
    # The files the browser fetches: the modules under their hashed names.
    for url in mapping.values():
        path = _collected(root, url)
        for match in IMPORT_RE.finditer(_strip_js_comments(path.read_text(errors="replace"))):
            spec = match["spec"]
            assert spec.startswith(("./", "../")), f"{url} imports {spec!r}: only relative imports"
            resolved = str(PurePosixPath(url).parent / spec)
            resolved = os.path.normpath(resolved)
            # What the browser fetches: the import map's target for that URL, if any.
            fetched = mapping.get(resolved, resolved)
            assert _collected(root, fetched).is_file(), f"{url} imports {spec!r} -> {fetched}: not collected"
            checked += 1
    assert checked >= 8, "the page's own modules import each other"


def test_the_import_map_names_every_module_under_its_hashed_name(production):
    root, pages = production
    mapping = _import_map(pages["/"])
    for plain, hashed in mapping.items():
        assert _collected(root, hashed).is_file(), hashed
        assert hashed != plain and re.search(r"\.[0-9a-f]{12}\.m?js$", hashed), hashed
    for module in ("chat/main.js", "chat/ui.js", "chat/sidebar.js", "vendor/marked/marked.esm.js"):
        assert STATIC_URL + module in mapping, module


def test_every_asset_a_page_references_was_collected(production):
    root, pages = production
    for path, page in pages.items():
        assert page["status"] == 200, path
        parser = _Assets()
        parser.feed(page["html"])
        assert parser.urls, path
        for url in parser.urls:
            assert re.search(r"\.[0-9a-f]{12}\.\w+$", url), f"{path}: {url} is not a hashed name"
            assert _collected(root, url).is_file(), f"{path} references {url}, which was not collected"


def test_every_css_url_resolves_to_a_collected_file(production):
    root, _ = production
    checked = 0
    for css in root.rglob("*.css"):
        for match in CSS_URL_RE.finditer(css.read_text(errors="replace")):
            target = match["url"].strip()
            if target.startswith(("data:", "#")):
                continue
            resolved = (css.parent / target.split("?")[0].split("#")[0]).resolve()
            assert resolved.is_file(), f"{css.relative_to(root)}: url({target}) was not collected"
            checked += 1
    assert checked >= 1


def test_the_content_security_policy_allows_exactly_the_import_map(production):
    _, pages = production
    for path, page in pages.items():
        parser = _Assets()
        parser.feed(page["html"])
        digest = hashlib.sha256(parser.import_maps[0].encode()).digest()
        source = f"'sha256-{base64.b64encode(digest).decode()}'"
        script_src = next(d for d in page["csp"].split(";") if d.strip().startswith("script-src"))
        assert script_src.split() == ["script-src", "'self'", source], path
        assert "unsafe-inline" not in page["csp"]
