from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Heavy libraries the runs import lazily (scikit-learn for the digits data and folds, matplotlib for
# the plots): imported once at collection, so their one-time import cost (seconds on a cold disk)
# is not charged to whichever test happens to train first.
import matplotlib  # noqa: E402,F401
import sklearn.datasets  # noqa: E402,F401
import sklearn.model_selection  # noqa: E402,F401

matplotlib.use("Agg")

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


@pytest.fixture
def assert_resume_exact(tmp_path):
    """``check(make_cfg, stop_after)``: a run stopped after ``stop_after`` epochs and resumed writes
    the same ``metrics.jsonl`` as an uninterrupted one (``make_cfg(name)`` gives a config under
    ``tmp_path / name``)."""
    from noisylabels.train import fit

    def check(make_cfg, stop_after: int) -> None:
        fit(make_cfg("full"))
        part = make_cfg("part")
        fit(part, stop_after=stop_after)
        fit(part, resume=True)
        read = lambda d: (tmp_path / d / "metrics.jsonl").read_text()  # noqa: E731
        assert read("full") == read("part")

    return check


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (tiny float64 models: thread start-up dominates)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
