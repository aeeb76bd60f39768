"""Shared pytest setup: the repo root and tests/ on ``sys.path``; the project logger reset after each test.

Areas add their own helpers in ``tests/fixtures_<area>.py`` and import them directly.
"""
import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _p in (REPO_ROOT, TESTS_DIR):
    if _p not in sys.path:
        sys.path.insert(0, _p)


@pytest.fixture(autouse=True)
def _reset_project_logger():
    """Close any log-file handler a test attached, so tests never write into each other's folders."""
    yield
    from engine.utils.logger import setup_logger

    setup_logger(None)


@pytest.fixture
def repo_root():
    """Absolute path of the repository root."""
    return REPO_ROOT
