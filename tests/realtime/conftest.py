"""Fixtures of the tests that run real server processes on PostgreSQL."""

from __future__ import annotations

import os

import pytest

from tests.processes import postgres_database


@pytest.fixture
def database():
    """A database of its own on the ``DATABASE_URL`` server, dropped afterwards."""
    with postgres_database(os.environ["DATABASE_URL"], "chatsite_scaleout") as url:
        yield url
