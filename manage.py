#!/usr/bin/env python3
"""chatsite's command-line entry point.

``python3 manage.py serve`` installs everything on first use and starts the app;
``python3 manage.py test`` runs the whole test suite. Any other Django
management command works too.
"""

import os
import sys


def main() -> None:
    from chatsite.bootstrap import ensure_environment

    ensure_environment(sys.argv)
    from chatsite.environment import prepare

    prepare(sys.argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
