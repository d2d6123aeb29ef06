"""pytest set-up shared by the unit tests and the nbval notebook runs."""

import shutil
from pathlib import Path


def pytest_sessionstart(session) -> None:
    """Notebooks run under nbval train smoke models into _build/nbval: start from none, so no stale run is reused."""
    if session.config.getoption("nbval", False) or session.config.getoption("nbval_lax", False):
        shutil.rmtree(Path(__file__).parent / "_build" / "nbval", ignore_errors=True)
