"""HDB test fixtures; the data generators live in hdb_testdata.py (importable by name)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from schemas.registry import load_registry  # noqa: E402


@pytest.fixture(scope="session")
def registry():
    return load_registry()
