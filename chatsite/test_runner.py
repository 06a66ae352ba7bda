"""``python3 manage.py test`` runs the pytest suite (pytest-django).

With no test labels it runs two pytest sessions, one after the other: the suite
(everything under ``tests/`` but ``tests/browser/``, in random order), then the
browser tests (``tests/browser/``, in file order: sync Playwright keeps an event
loop running in its thread, so they never share a process with the async tests).
With labels, one session runs exactly those.

``--checks`` first runs the static checks CI runs (lint, format, migrations,
types) and stops at the first that fails.
"""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings

OK, NO_TESTS = 0, 5  # pytest's exit codes
SUITE = ["tests"]  # pyproject's addopts leave out tests/browser when it is not named
BROWSER = ["tests/browser", "-p", "no:randomly"]

#: What ``--checks`` runs, in order, from the project's root, each as
#: ``python -m ...`` in this interpreter (the one the bootstrap set up).
CHECKS = [
    ["ruff", "check", "."],
    ["ruff", "format", "--check", "."],
    ["django", "makemigrations", "--check", "--dry-run"],
    ["mypy"],
]


def run_checks() -> int:
    for check in CHECKS:
        command = [sys.executable, "-m", *check]
        print(f"chatsite: {' '.join(check)}", flush=True)
        result = subprocess.run(command, cwd=settings.BASE_DIR)
        if result.returncode != 0:
            print(f"chatsite: {' '.join(check)} failed ({result.returncode})", flush=True)
            return result.returncode
    return 0


class PytestTestRunner:
    def __init__(
        self,
        verbosity: int = 1,
        failfast: bool = False,
        keepdb: bool = False,
        checks: bool = False,
        **kwargs,
    ):
        self.verbosity = verbosity
        self.failfast = failfast
        self.keepdb = keepdb
        self.checks = checks
        self.keyword = kwargs.get("keyword")

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--keepdb", action="store_true", help="Keep the test database.")
        parser.add_argument("-k", dest="keyword", help="Only tests matching this pytest expression.")
        parser.add_argument(
            "--checks",
            action="store_true",
            help="First run ruff check, ruff format --check, makemigrations --check and mypy.",
        )

    def options(self) -> list[str]:
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
        return argv

    def run_tests(self, test_labels: list[str], **kwargs) -> int:
        if self.checks:
            failed = run_checks()
            if failed:
                return failed
        if test_labels:
            return self.pytest([*self.options(), *test_labels])
        codes: list[int] = []
        for session in (SUITE, BROWSER):
            codes.append(self.pytest([*self.options(), *session]))
            if self.failfast and codes[-1] not in (OK, NO_TESTS):
                break
        failures = [code for code in codes if code not in (OK, NO_TESTS)]
        if failures:
            return failures[0]
        # With -k, one session may match nothing; only both matching nothing says so.
        return NO_TESTS if all(code == NO_TESTS for code in codes) else OK

    @staticmethod
    def pytest(argv: list[str]) -> int:
        # A process per session: pytest-django's database set-up, the shared
        # upstream client and Playwright's loop all belong to one session.
        sys.stdout.flush()
        return subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=settings.BASE_DIR).returncode
