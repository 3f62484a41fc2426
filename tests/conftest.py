"""Shared fixtures: a config on free loopback ports in a temp home, and real processes that
are always stopped by pid (also when a test fails)."""
from __future__ import annotations

import pytest
from hypothesis import settings

# CI machines are shared and noisy: judge examples by behaviour, never by time.
settings.register_profile("tickstack", deadline=None)
settings.load_profile("tickstack")

from helpers import Procs, write_config
from ops.config import load


# Tests that start real processes carry the `process` mark, so `pytest -m "not process"` runs
# the unit tests alone in seconds. These fixtures start processes; modules that start them
# otherwise mark themselves.
PROCESS_FIXTURES = {"stack", "make_stack", "shared_tp"}


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


@pytest.fixture
def stack(tmp_path):
    """(cfg, procs): a config on free ports in a temp home, and a process starter."""
    home = tmp_path / "home"
    path = write_config(home)
    procs = Procs(path, home)
    yield load(path, home), procs
    procs.stop_all()


@pytest.fixture
def make_stack(tmp_path):
    """Like `stack`, with config overrides: make_stack(tickerplant={"mode": "batched"})."""
    made = []

    def make(**sections):
        home = tmp_path / f"home{len(made)}"
        path = write_config(home, **sections)
        procs = Procs(path, home)
        made.append(procs)
        return load(path, home), procs
    yield make
    for p in made:
        p.stop_all()


