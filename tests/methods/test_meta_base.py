"""The meta-method base and what every method shares: named records, the loss section, the import
graph, checkpoint state, and the same numbers as before the base existed."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.errors import UserError
from noisylabels.methods import MethodContext, MetaNetMethod, Record, SampleRecords, register_method
from noisylabels.methods.mwnet import WeightNet
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

SRC = Path(__file__).resolve().parents[2] / "src" / "noisylabels"


# -- records -------------------------------------------------------------------------------------------
def test_sample_records_mean_over_visits_history_npz_and_weights_only_state(tmp_path):
    train = torch.tensor([0, 2, 3, 5])
    rec = SampleRecords(["weight", "beta"], num_samples=6, train_index=train)
    rec.start_epoch()
    rec.add(torch.tensor([0, 2]), {"weight": torch.tensor([1.0, 3.0]), "beta": 0.5})
    rec.add(torch.tensor([0, 5]), {"weight": torch.tensor([2.0, 4.0])})
    means = rec.end_epoch(0)
    np.testing.assert_allclose(means["weight"], [1.5, 3.0, np.nan, 4.0])  # sample 3 never visited
    np.testing.assert_allclose(means["beta"], [0.5, 0.5, np.nan, np.nan])
    rec.start_epoch()
    rec.add(torch.tensor([3]), {"weight": torch.tensor([7.0])})
    assert set(rec.end_epoch(1)) == {"weight"}  # beta not recorded in epoch 1
    assert rec.at("weight", 0)[0] == 1.5 and rec.at("weight", 9)[2] == 7.0  # a missing epoch: the last
    rec.save_npz(tmp_path / "r.npz")
    with np.load(tmp_path / "r.npz", allow_pickle=False) as z:
        assert z["epochs"].tolist() == [0, 1] and z["index"].tolist() == [0, 2, 3, 5]
        assert z["weight"].shape == (2, 4) and np.isnan(z["beta"][1]).all()
    torch.save(rec.state_dict(), tmp_path / "s.pt")
    other = SampleRecords(["weight", "beta"], num_samples=6, train_index=train)
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for name in ("weight", "beta"):
        assert sorted(other.history[name]) == sorted(rec.history[name])
        for e in rec.history[name]:
            np.testing.assert_array_equal(other.history[name][e], rec.history[name][e])


def test_the_loop_context_satisfies_the_method_protocol(tmp_path):
    ctx = build_context(run_cfg(tmp_path, **{"method.name": "mwnet"}))
    assert isinstance(ctx, MethodContext)
    ctx.start_epoch(0)
    mb = ctx.next_meta_batch(7)
    assert mb.x.shape[0] == 7 and bool(torch.isin(mb.index, ctx.data.splits["meta"]).all())
    assert torch.equal(ctx.data.labels[mb.index], mb.y)


def test_checkpoints_of_every_meta_method_load_with_weights_only(tmp_path):
    for name in ("mwnet", "l2rw", "l2b", "truncated-lq"):
        fit(run_cfg(tmp_path, name, epochs=1, **{"method.name": name, "data.train_subset": 400}))
        state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)
        assert "method" in state and "records" in state


# -- the loss section ------------------------------------------------------------------------------------
def test_the_loss_section_means_something_for_every_method(tmp_path):
    quick = {"data.train_subset": 300}
    assert fit(run_cfg(tmp_path, "erm", epochs=1, **quick, **{"loss.name": "gce"}))["loss"] == "gce"
    assert fit(run_cfg(tmp_path, "mw", epochs=1, **quick, **{"method.name": "mwnet"}))["loss"] == "ce"
    assert json.loads((tmp_path / "erm" / "summary.json").read_text())["loss"] == "gce"
    for method, over in (("mwnet", {"loss.name": "mae"}), ("l2b", {"loss.name": "gce"}),
                         ("truncated-lq", {"loss.name": "gce"}), ("truncated-lq", {"loss.q": 0.5}),
                         ("forward", {"loss.name": "sce"})):
        with pytest.raises(UserError, match="own loss"):
            build_context(run_cfg(tmp_path, "bad", **{"method.name": method, **over}))
    assert build_context(run_cfg(tmp_path, "ok", **{"method.name": "l2rw", "loss.name": "ce"})).cfg["loss"]["name"] == "ce"
    assert build_context(run_cfg(tmp_path, "tl", **{"method.name": "truncated-lq"})).cfg["loss"]["name"] == "truncated-lq"


# -- the import graph ------------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    """Absolute names a module imports (relative imports resolved against the package)."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    pkg = list(rel.parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            out.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_methods_never_import_the_loop_and_train_imports_methods_one_way():
    for path in (SRC / "methods").glob("*.py"):
        bad = {m for m in _imports(path) if m.startswith(("noisylabels.train", "noisylabels.data", "noisylabels.bench"))}
        assert not bad, f"{path.name} imports {bad}"
    code = ("import sys, noisylabels.methods; "
            "print(sorted(m for m in sys.modules if m.startswith(('noisylabels.train', 'noisylabels.data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- a new meta method is a short statement of its paper's part -------------------------------------------
@register_method("test-tiny-mwnet", help="(tests) the README's 20-line meta method")
class _TinyMWNet(MetaNetMethod):
    own_loss = "ce"
    records = (Record("weight", plain_value=1.0), Record("loss"))
    detection = ("loss", 1.0)

    def build_meta_net(self):
        return WeightNet(16)

    def loss_layer(self, z, y, *, x, index):
        ce = F.cross_entropy(z, y, reduction="none")
        w = self.meta_net(ce.detach())
        self.note(weight=w, loss=ce)
        return w * ce


def test_a_new_meta_method_inherits_the_step_records_and_detection(tmp_path):
    s = fit(run_cfg(tmp_path, epochs=2, **{"method.name": "test-tiny-mwnet", "data.train_subset": 400,
                                            "method.meta_interval": 2}))
    assert s["status"] == "finished" and s["num_meta"] > 0 and s["loss"] == "ce"
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("detection_auroc" in r and "mean_weight_noisy" in r for r in rows)
    assert (tmp_path / "run" / "sample_records.npz").is_file() and (tmp_path / "run" / "weight_hist.png").is_file()
    with pytest.raises(UserError, match="no option"):
        build_context(run_cfg(tmp_path, "bad", **{"method.name": "test-tiny-mwnet", "method.hiden": 3}))


# -- the same numbers as before the base existed ------------------------------------------------------------
BEFORE = json.loads((Path(__file__).parent / "data" / "summaries_before_meta_base.json").read_text())
OLD_PRESET = {"method.normalize": "sum", "method.meta_optimizer": "adam", "method.meta_weight_decay": 1e-4}
CASES = {
    "mwnet": {"method.name": "mwnet"},
    "mwnet-none": {"method.name": "mwnet", "method.normalize": "none"},
    "mwnet-delayed": {"method.name": "mwnet", "method.delayed": True, "method.meta_interval": 2},
    # the presets' defaults then were MW-Net's (Adam, sum); now Ghosh & Lan's: pin the old ones
    "rmnw-net": {"method.name": "rmnw-net", **OLD_PRESET},
    "mnw-net": {"method.name": "mnw-net", **OLD_PRESET},
    "l2rw": {"method.name": "l2rw", "method.warmup_epochs": 1},
    "l2b-sum": {"method.name": "l2b", "method.normalize": "sum"},
    "l2b-sigmoid": {"method.name": "l2b", "method.normalize": "sigmoid"},
    "l2b-softmax": {"method.name": "l2b", "method.normalize": "softmax"},
    "l2b-ab1": {"method.name": "l2b", "method.ablation": "alpha+beta=1"},
    # pruned with the current model then (prune_model: best is the default since issue 11)
    "truncated-lq": {"method.name": "truncated-lq", "method.warmup_epochs": 1, "method.prune_every": 1,
                     "method.prune_model": "current"},
    "erm-gce": {"method.name": "erm", "loss.name": "gce"},
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_summary_numbers_as_before_the_meta_base(tmp_path, case, one_thread):
    """Recorded with one thread on commit 27043cd (before this refactoring); equal to 1e-6 (measured:
    bitwise equal here). Slow-marked because the numbers depend on the machine's float kernels."""
    s = fit(run_cfg(tmp_path, epochs=BEFORE["epochs"], **{"train.num_threads": 1, **CASES[case]}))
    for key, want in BEFORE["runs"][case].items():
        assert s[key] == pytest.approx(want, rel=1e-6, abs=1e-9), key


# -- NARL, MLC and EMLC pinned before the meta schedule moved into meta/schedule.py (issue 21) -----------
PINNED = json.loads((Path(__file__).parent / "data" / "summaries_label_correction_narl.json").read_text())
SCHEDULE_CASES = {
    "narl": {"method.name": "narl", "method.meta_interval": 2},        # every-k meta steps
    "mlc": {"method.name": "mlc"},
    "mlc-k2": {"method.name": "mlc", "method.k": 2, "method.clean_in_student": False},  # MLC's discounted sum
    "mlc-k3-mix": {"method.name": "mlc", "method.k": 3},
    "emlc": {"method.name": "emlc"},
    "emlc-k2": {"method.name": "emlc", "method.k": 2},                 # the FPMG window
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SCHEDULE_CASES))
def test_narl_mlc_emlc_same_summary_numbers_as_before_the_schedule(tmp_path, case, one_thread):
    """Recorded with one thread on commit d4d2411 (before the schedule strategy; 600 training
    samples, 2 epochs, about 1-4 s each); bitwise equal there, compared to 1e-6."""
    s = fit(run_cfg(tmp_path, epochs=PINNED["epochs"],
                    **{"train.num_threads": 1, "data.train_subset": 600, **SCHEDULE_CASES[case]}))
    assert set(PINNED["runs"][case]) <= set(s)
    for key, want in PINNED["runs"][case].items():
        assert s[key] == pytest.approx(want, rel=1e-6, abs=1e-9), key
