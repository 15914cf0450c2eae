from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Decoded-image caches of the tests go to a temporary folder, never the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NOISYLABELS_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data beside the repository; skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED
