"""Co-teaching (Han et al. 2018) and Co-teaching+ (Yu et al. 2019): the rate schedules, the small-loss
and disagreement sets against hand computations, the exchange (each network learns from its peer's
selection), the detection direction, resume, the forget-rate estimate, and the CLI paths."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.errors import UserError
from noisylabels.methods import create_method
from noisylabels.methods.coteaching import (coteaching_plus_remember_rate, coteaching_remember_rate, disagreement,
                                            small_loss_selection)
from noisylabels.train import build_context, fit
from noisylabels.train.build import check_names

from tests.helpers import run_cfg

SMALL = {"data.train_subset": 400, "model.hidden": [32], "train.num_threads": 1}


def _cfg(tmp_path, name="run", method="coteaching", epochs=3, **over):
    return run_cfg(tmp_path, name, epochs=epochs, **{"method.name": method, **SMALL, **over})


def _lines(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


# -- R(T) and lambda(e) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("epoch, expected", [(0, 1.0), (1, 0.96), (5, 0.8), (9, 0.64), (10, 0.6), (11, 0.6), (200, 0.6)])
def test_coteaching_rate_is_one_minus_min_of_the_ramp_and_tau(epoch, expected):
    # R(T) = 1 - min(T / T_k * tau, tau), tau = 0.4, T_k = 10, by hand
    assert coteaching_remember_rate(epoch, tau=0.4, num_gradual=10) == pytest.approx(expected)


def test_coteaching_rate_of_the_official_code_is_its_linspace_shifted_by_its_untrained_epoch_0():
    # np.linspace(0, 0.4, 10)[e + 1] = (e + 1) * 0.4 / 9 until e = 8, then 0.4
    assert coteaching_remember_rate(0, tau=0.4, num_gradual=10, schedule="code") == pytest.approx(1 - 0.4 / 9)
    assert coteaching_remember_rate(7, tau=0.4, num_gradual=10, schedule="code") == pytest.approx(1 - 8 * 0.4 / 9)
    assert coteaching_remember_rate(8, tau=0.4, num_gradual=10, schedule="code") == pytest.approx(0.6)
    assert coteaching_remember_rate(0, tau=0.4, num_gradual=1, schedule="code") == pytest.approx(0.6)
    assert coteaching_remember_rate(0, tau=0.4, num_gradual=1) == 1.0  # the paper keeps all in the first epoch
    assert coteaching_remember_rate(1, tau=0.4, num_gradual=1) == pytest.approx(0.6)


@pytest.mark.parametrize("epoch, expected", [(0, 1.0), (5, 0.9), (10, 0.8), (20, 0.7), (29, 0.61)])
def test_coteaching_plus_rate_ramps_to_tau_then_grows_towards_two_tau(epoch, expected):
    # lambda(e) = 1 - min(e tau / E_k, (1 + (e - E_k) / (E_max - E_k)) tau), tau 0.2, E_k 10, E_max 30:
    # e = 20: 1 - 1.5 * 0.2 = 0.7; e = 29: 1 - 1.95 * 0.2 = 0.61
    assert coteaching_plus_remember_rate(epoch, tau=0.2, num_gradual=10, epochs=30) == pytest.approx(expected)


def test_coteaching_plus_rate_limits():
    assert coteaching_plus_remember_rate(7, tau=0.2, num_gradual=10, epochs=8) == pytest.approx(1 - 0.14)  # no E_max term
    assert coteaching_plus_remember_rate(10, tau=0.2, num_gradual=10, epochs=10) == pytest.approx(0.8)
    assert coteaching_plus_remember_rate(19, tau=0.9, num_gradual=10, epochs=20) == 0.0  # 1.71 tau-forget clipped
    assert coteaching_plus_remember_rate(25, tau=0.2, num_gradual=10, epochs=30, schedule="code") == pytest.approx(0.8)


# -- the small-loss and disagreement sets -------------------------------------------------------------------
def test_small_loss_selection_keeps_the_ceil_of_r_times_the_candidates_with_the_smallest_loss():
    losses = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7])
    assert small_loss_selection(losses, 0.5).nonzero().flatten().tolist() == [0, 1, 3]  # ceil(2.5) = 3
    assert small_loss_selection(losses, 0.5, schedule="code").nonzero().flatten().tolist() == [1, 3]  # int(2.5)
    cand = torch.tensor([True, False, True, True, False])  # among {0: .5, 2: .9, 3: .3}: ceil(1.5) = 2
    assert small_loss_selection(losses, 0.5, candidates=cand).nonzero().flatten().tolist() == [0, 3]
    assert small_loss_selection(losses, 1.0, candidates=cand).nonzero().flatten().tolist() == [0, 2, 3]
    assert not small_loss_selection(losses, 0.0).any()
    assert not small_loss_selection(losses, 0.9, candidates=torch.zeros(5, dtype=torch.bool)).any()


def test_disagreement_is_where_the_argmax_predictions_differ():
    z1 = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 2.0], [0.0, 3.0], [0.0, 1.0], [0.2, 1.0]])
    assert disagreement(z1, z2).tolist() == [True, False, True, False]


# -- the exchange, against an independent computation ---------------------------------------------------------
def _k_smallest(losses: np.ndarray, rate: float, among: np.ndarray) -> set[int]:
    idx = np.flatnonzero(among)
    k = int(np.ceil(rate * len(idx) - 1e-9))
    return set(idx[np.argsort(losses[idx], kind="stable")[:k]].tolist())


@pytest.mark.parametrize("method, epoch, init", [("coteaching", 6, 0), ("coteaching-plus", 6, 0),
                                                 ("coteaching-plus", 6, 7)])
def test_each_network_is_updated_on_its_peers_small_loss_selection(tmp_path, method, epoch, init):
    over = {"method.forget_rate": 0.6}
    if method == "coteaching-plus":
        over["method.init_epochs"] = init
    ctx = build_context(_cfg(tmp_path, method=method, epochs=20, **over))
    m, peer = ctx.method, ctx.networks["peer"]
    ctx.epoch = epoch
    batch = next(iter(ctx.loader("train", shuffle=True, augment=False, generator=torch.Generator().manual_seed(0))))
    x, y, index = ctx.to_device(batch.x), batch.y, batch.index
    with torch.no_grad():  # both networks in train mode, as in the step (batch statistics)
        l1 = F.cross_entropy(ctx.model(x), y, reduction="none").numpy()
        l2 = F.cross_entropy(peer.model(x), y, reduction="none").numpy()
        z1, z2 = ctx.model(x), peer.model(x)
    among = np.ones(len(y), bool) if (method == "coteaching" or epoch < init) else (
        z1.argmax(1) != z2.argmax(1)).numpy()
    rate = (1 - 0.6 * epoch / 10) if method == "coteaching" else 1 - min(0.6 * epoch / 10, (1 + (epoch - 10) / 10) * 0.6)
    d_f, d_g = _k_smallest(l1, rate, among), _k_smallest(l2, rate, among)
    assert d_f != d_g  # the exchange is visible
    seen = []
    real = ctx.backward_and_step
    ctx.backward_and_step = lambda loss, net=None: (seen.append((net, float(loss.detach()))), real(loss, net=net))
    m.train_step(ctx, x, y, index)
    assert [n for n, _ in seen] == [None, peer]
    assert seen[0][1] == pytest.approx(l1[sorted(d_g)].mean(), rel=1e-5)  # f on g's selection
    assert seen[1][1] == pytest.approx(l2[sorted(d_f)].mean(), rel=1e-5)  # g on f's selection
    assert seen[0][1] != pytest.approx(l1[sorted(d_f)].mean(), rel=1e-5)
    sel = m.sample_records._sum["selected"][index].numpy()  # recorded: how many peers picked each sample, / 2
    expected = np.array([(i in d_f) + (i in d_g) for i in range(len(y))]) / 2
    assert np.allclose(sel, expected)


# -- direction, records, evaluation ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["coteaching", "coteaching-plus"])
def test_planted_wrong_labels_rank_first_and_are_selected_less(tmp_path, method):
    s = fit(_cfg(tmp_path, method=method, epochs=4, **{"method.num_gradual": 2}))
    last = _lines(tmp_path / "run")[-1]
    assert s["detection_auroc"] > 0.7  # the loss record ranks the planted (simulated) wrong labels first
    assert last["mean_loss_noisy"] > last["mean_loss_clean"]
    assert last["mean_selected_noisy"] < last["mean_selected_clean"]
    assert last["selection_precision"] > 1 - s["realized_noise_rate"]  # the selection is cleaner than the data
    assert s["tau"] == pytest.approx(0.4)  # method.forget_rate: noise-rate = the configured noise.rate
    assert last["forget_rate"] == pytest.approx(0.4 if method == "coteaching" else 0.4 * (1 + 1 / 2))


def test_the_peer_is_evaluated_beside_the_first_network_and_the_ensemble_is_both(tmp_path):
    fit(_cfg(tmp_path, epochs=2))
    row = _lines(tmp_path / "run")[-1]
    ctx = build_context(_cfg(tmp_path, "other", epochs=2))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    peer = ctx.networks["peer"].model
    peer.load_state_dict(ckpt["networks"]["peer"]["model"])
    peer.eval()
    data = ctx.data
    x = (data.test_images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        acc = float((peer(x).argmax(1) == data.test_labels).float().mean())
    assert row["test_accuracy_net2"] == pytest.approx(acc, abs=1e-6)
    assert "test_accuracy_net1" not in row
    fit(_cfg(tmp_path, "ens", epochs=1, **{"method.predict": "ensemble"}))
    best = torch.load(tmp_path / "ens" / "best_model.pt", weights_only=True)
    assert any(k.startswith("members.1.") for k in best)
    assert {"test_accuracy_net1", "test_accuracy_net2"} <= set(_lines(tmp_path / "ens")[-1])


# -- resume ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["coteaching", "coteaching-plus"])
def test_resume_is_exact_for_both_networks(tmp_path, method):
    over = {"method.num_gradual": 2, "optim.schedule": "cosine"}
    fit(_cfg(tmp_path, "full", method=method, **over))
    fit(_cfg(tmp_path, "part", method=method, **over), stop_after=1)
    fit(_cfg(tmp_path, "part", method=method, **over), resume=True)
    assert _lines(tmp_path / "full") == _lines(tmp_path / "part")
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    # every network, optimiser (momentum buffers), schedule, record and per-sample tensor
    for key in ("model", "optimizer", "scheduler", "networks", "method", "records", "per_sample"):
        _assert_same(a.get(key), b.get(key), key)
    assert a["networks"]["peer"]["optimizer"]["state"]  # the peer's momentum is in there


def _assert_same(a, b, where):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# -- the forget rate: given, from the noise rate, or estimated -------------------------------------------------
def test_the_estimated_forget_rate_reaches_the_method_and_the_runs_records(tmp_path):
    from noisylabels.detect import resolve_forget_rate

    cfg = _cfg(tmp_path, epochs=1, **{"method.forget_rate": "estimate", "method.estimate_epochs": 1})
    with pytest.raises(UserError, match="resolved before training"):
        fit(cfg)
    s = fit(cfg, resolve=resolve_forget_rate, overwrite=True)
    out = tmp_path / "run"
    warm = json.loads((out / "forget-rate-estimate" / "summary.json").read_text())
    est = warm["estimated_noise_rate_train"]
    assert warm["method"] == "erm" and warm["folds"] == 2 and 0.0 < est < 1.0
    assert sum(f["num_train"] for f in warm["fold_runs"]) == s["num_train"]  # each fold on the other half
    from noisylabels.config import load_config

    assert load_config(out / "config.yaml")["method"]["forget_rate"] == pytest.approx(est)
    assert s["tau"] == pytest.approx(est) and _lines(out)[-1]["tau"] == pytest.approx(est)
    marker = json.loads((out / ".noisylabels-run.json").read_text())
    assert "forget-rate-estimate" in marker["manifest"]  # the warm-up belongs to the run: --overwrite removes it


def test_a_run_with_an_estimated_forget_rate_resumes_from_its_unresolved_config(tmp_path):
    """A suite cell resumes with the config it started with (``forget_rate: estimate``): the run
    continues with the same number, and the finished warm-up is reused, not trained again."""
    from noisylabels.detect import resolve_forget_rate

    cfg = _cfg(tmp_path, epochs=2, **{"method.forget_rate": "estimate", "method.estimate_epochs": 1,
                                      "data.train_subset": 240})
    from noisylabels.config import load_config

    fit(cfg, resolve=resolve_forget_rate, stop_after=1)
    fold = tmp_path / "run" / "forget-rate-estimate" / "fold-0" / "summary.json"
    trained = fold.read_text()
    tau = load_config(tmp_path / "run" / "config.yaml")["method"]["forget_rate"]
    s = fit(cfg, resolve=resolve_forget_rate, resume=True)
    assert s["status"] == "finished" and len(_lines(tmp_path / "run")) == 2
    assert fold.read_text() == trained and s["tau"] == tau and isinstance(tau, float)


def test_forget_rate_options_are_checked_before_any_data(tmp_path):
    with pytest.raises(UserError, match="noise.type is none"):
        check_names(_cfg(tmp_path, **{"noise.type": "none"}))
    check_names(_cfg(tmp_path, **{"noise.type": "none", "method.forget_rate": 0.2}))
    for bad in ({"forget_rate": 1.0}, {"forget_rate": -0.1}, {"forget_rate": "half"}, {"forget_rate": True},
                {"num_gradual": 0}, {"schedule": "fast"}, {"predict": "mean"}, {"estimate_folds": 1},
                {"estimate_epochs": 0}):
        with pytest.raises(UserError):
            create_method("coteaching", **bad)
    with pytest.raises(UserError, match="init_epochs"):
        create_method("coteaching-plus", init_epochs=-1)


# -- the CLI: --folds, detect, export ----------------------------------------------------------------------
def test_folds_detect_and_export_work_for_coteaching_on_a_users_labels(tmp_path, capsys, one_thread):
    from PIL import Image

    from noisylabels.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{'ab'[i % 2]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    data = ["--dataset", "imagefolder", "--data-dir", str(folder), "--set", f"data.options.labels_csv={tmp_path / 'labels.csv'}",
            "--set", "train.num_threads=1", "--epochs", "1", "--quiet", "--method", "coteaching"]
    assert main(["train", *data, "--out", str(tmp_path / "r")]) == 2  # no simulated noise: forget_rate is needed
    assert "noise.type is none" in capsys.readouterr().err
    run = tmp_path / "cf"
    assert main(["train", *data, "--set", "method.forget_rate=0.2", "--folds", "2", "--out", str(run)]) == 0
    assert (run / "label_issues.csv").is_file() and (run / "fold-1" / "sample_records.npz").is_file()
    assert main(["detect", "--run", str(run)]) == 0
    assert main(["export", "--run", str(run), "--drop-issues", "--out", str(tmp_path / "clean.csv")]) == 0
    assert (tmp_path / "clean.csv").read_text().startswith("path,label")
    capsys.readouterr()


def test_selection_quality_counts_by_hand():
    from noisylabels.methods.context import selection_quality

    mask = np.array([True, True, False, False, True, False])
    noisy = np.array([False, True, False, True, False, False])  # clean: 0, 2, 4, 5; selected clean: 0, 4
    assert selection_quality(mask, noisy, prefix="s") == {"s_fraction": 3 / 6, "s_precision": 2 / 3,
                                                          "s_recall": 2 / 4}
    assert selection_quality(mask, None, prefix="d", fraction="labelled_fraction") == {"d_labelled_fraction": 0.5}
    none = selection_quality(np.zeros(2, bool), np.array([True, True]), prefix="x")
    assert none == {"x_fraction": 0.0, "x_precision": None, "x_recall": None}
