from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data beside the repository; skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED
