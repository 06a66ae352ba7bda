"""A pytest plugin (pyproject's ``addopts``: ``-p tests.pytest_environment``), loaded
before pytest-django reads the settings: a bare ``pytest`` gets the environment that
``manage.py test`` prepares."""

import sys

from chatsite.environment import prepare

prepare([sys.argv[0], "test"])
