"""``python3 manage.py test`` runs the pytest suite (pytest-django)."""

from __future__ import annotations

import sys


class PytestTestRunner:
    def __init__(self, verbosity: int = 1, failfast: bool = False, keepdb: bool = False, **kwargs):
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb
        self.keyword = kwargs.get("keyword")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--keepdb", action="store_true", help="Keep the test database.")
        parser.add_argument("-k", dest="keyword", help="Only tests matching this pytest expression.")

    def run_tests(self, test_labels: list[str], **kwargs) -> int:
        import pytest

        argv = ["-p", "no:cacheprovider"]
        if self.verbosity == 0:
            argv.append("-q")
        elif self.verbosity >= 2:
            argv.append("-v")
        if self.failfast:
            argv.append("--exitfirst")
        if self.keepdb:
            argv.append("--reuse-db")
        if self.keyword:
            argv += ["-k", self.keyword]
        argv.extend(test_labels)
        sys.stdout.flush()
        return int(pytest.main(argv))
