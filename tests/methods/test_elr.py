"""ELR (Liu et al., NeurIPS 2020): the regulariser against the paper's formula, its logit gradient
against the paper's closed form (float64), the target update by hand, the limiting cases, the
direction (a linear model with planted wrong labels), the detection score in both planted states,
and everything a run gets (resume, folds, detect, export)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.cli import main
from noisylabels.errors import UserError
from noisylabels.methods import create_method, elr_regularizer, target_probs, temporal_ensemble
from noisylabels.train import fit

from tests.helpers import run_cfg

DT = torch.float64


def _simplex(g, n, k, mass=1.0):
    t = torch.rand(n, k, generator=g, dtype=DT) ** 3
    return mass * t / t.sum(1, keepdim=True)


def _paper_reg(z, t):
    """log(1 - <p, t>), the paper's formula written out (float64)."""
    return torch.log(1.0 - (torch.softmax(z, 1) * t).sum(1))


# -- the regulariser and its gradient -------------------------------------------------------------------
@pytest.mark.parametrize("mass", [1.0, 0.51, 0.0])  # a converged target, one after two updates (beta 0.7), the start
def test_regulariser_is_the_papers_log_one_minus_inner_product(mass):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(40, 7, generator=g, dtype=DT) * 3
    t = _simplex(g, 40, 7, mass)
    torch.testing.assert_close(elr_regularizer(z, t), _paper_reg(z, t))
    # the official code's guard: p clamped to [c, 1 - c] inside the same formula
    p = torch.softmax(z, 1).clamp(1e-2, 1 - 1e-2)
    torch.testing.assert_close(elr_regularizer(z, t, clamp=1e-2), torch.log(1.0 - (p * t).sum(1)))


def test_logit_gradient_is_the_papers_closed_form_and_pulls_p_towards_t():
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(30, 6, generator=g, dtype=DT) * 2).requires_grad_(True)
    t = _simplex(g, 30, 6, 0.9)
    (grad,) = torch.autograd.grad(elr_regularizer(z, t).sum(), z)
    p = torch.softmax(z.detach(), 1)
    pt = (p * t).sum(1, keepdim=True)
    # Sec. 4.2: dR/dz_c = p_c / (1 - <p, t>) * sum_k (t_k - t_c) p_k
    closed = torch.stack([p[:, c] / (1 - pt[:, 0]) * ((t - t[:, c:c + 1]) * p).sum(1) for c in range(6)], dim=1)
    torch.testing.assert_close(grad, closed)
    # negative exactly where the target favours class c more than the prediction's average agreement
    favoured = t > pt
    assert bool((grad[favoured] < 0).all()) and bool((grad[~favoured] >= 0).all())
    # a small descent step raises <p, t> for every sample
    p2 = torch.softmax(z.detach() - 1e-3 * grad, 1)
    assert bool(((p2 * t).sum(1) > pt[:, 0]).all())


def test_regulariser_stays_finite_where_the_plain_formula_reaches_log_zero():
    z = torch.tensor([[40.0, 0.0, -3.0], [0.0, 60.0, 1.0]])  # float32: p rounds to a one-hot vector
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert torch.isinf(_paper_reg(z, t)).all()
    z.requires_grad_(True)
    r = elr_regularizer(z, t)
    # exactly: log(1 - p_y) = logsumexp_{j != y} z_j - logsumexp_j z_j, from float64 logits
    zd = z.detach().double()
    exact = torch.stack([torch.logsumexp(zd[0, 1:], 0), torch.logsumexp(zd[1, [0, 2]], 0)]) - torch.logsumexp(zd, 1)
    torch.testing.assert_close(r.double(), exact, rtol=1e-5, atol=1e-5)
    (grad,) = torch.autograd.grad(r.sum(), z)
    assert torch.isfinite(grad).all()


# -- the method's step: target update, limiting cases --------------------------------------------------------
class _Data:
    def __init__(self, given, clean, k):
        self.labels, self.clean_labels = given, clean
        self.splits = {"train": torch.arange(len(given))}
        self.classes = [str(c) for c in range(k)]
        self.has_ground_truth = True

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def is_noisy(self):
        return self.labels != self.clean_labels


def _ctx(tmp_path, model, given, clean=None, lr=0.5):
    """The parts of a run an ELR / ELR+ step and its epoch records use (MethodContext is a protocol):
    networks are copies of ``model`` with their own small random start, SGD each; mixup is the
    library's."""
    from noisylabels.data import mixup
    from noisylabels.methods.context import Network

    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def backward_and_step(loss, net=None):
        o = opt if net is None else net.optimizer
        o.zero_grad()
        loss.backward()
        o.step()

    ctx = SimpleNamespace(model=model, data=_Data(given, given if clean is None else clean, model.out_features),
                          device=torch.device("cpu"), recorder=SimpleNamespace(path=lambda name: Path(tmp_path) / name),
                          best={}, epoch=0, step=0, seed=0, cfg={"method": {"name": "elr"}}, networks={},
                          backward_and_step=backward_and_step, mixup=mixup)

    def add_network(spec):
        m = copy.deepcopy(model)
        g = torch.Generator().manual_seed(len(ctx.networks) + 1)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        net = Network(spec.name, m, torch.optim.SGD(m.parameters(), lr=lr) if spec.trainable else None)
        if not spec.trainable:
            m.requires_grad_(False)
        ctx.networks[spec.name] = net
        return net

    ctx.add_network = add_network
    return ctx


def _method(ctx, name="elr", **options):
    m = create_method(name, **options)
    m.setup(ctx)
    return m


def test_targets_follow_the_temporal_ensemble_by_hand(tmp_path):
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 4, (10,), generator=g)
    m = _method(_ctx(tmp_path, torch.nn.Linear(3, 4), y), beta=0.7)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    idx = torch.tensor([7, 2, 5])
    m.losses(z1, y[idx], idx)
    m.losses(z2, y[idx], idx)
    p1, p2 = torch.softmax(z1, 1), torch.softmax(z2, 1)
    expected = 0.7 * (0.3 * p1) + 0.3 * p2  # t starts at 0
    torch.testing.assert_close(m.target[idx], expected)
    others = torch.ones(10, dtype=torch.bool)
    others[idx] = False
    assert float(m.target[others].abs().sum()) == 0.0
    torch.testing.assert_close(temporal_ensemble(torch.zeros(1, 2), torch.tensor([[0.2, 0.8]]), beta=0.0),
                               torch.tensor([[0.2, 0.8]]))
    # the code's clamp: clamped, then renormalised to sum 1
    q = target_probs(torch.tensor([[30.0, 0.0, 0.0]]), clamp=1e-2)
    torch.testing.assert_close(q, torch.tensor([[0.99, 0.01, 0.01]]) / 1.01)


def test_lambda_zero_is_cross_entropy_exactly(tmp_path):
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 5, (8,), generator=g)
    m = _method(_ctx(tmp_path, torch.nn.Linear(3, 5), y), lam=0.0)
    z = torch.randn(8, 5, generator=g, dtype=DT, requires_grad=True)
    losses, _ = m.losses(z, y, torch.arange(8))
    assert torch.equal(losses, F.cross_entropy(z, y, reduction="none"))
    (a,) = torch.autograd.grad(losses.mean(), z)
    (b,) = torch.autograd.grad(F.cross_entropy(z, y), z)
    assert torch.equal(a, b)


def test_beta_zero_targets_the_current_prediction_held_fixed(tmp_path):
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 4, (6,), generator=g)
    m = _method(_ctx(tmp_path, torch.nn.Linear(3, 4), y), beta=0.0, lam=2.0)
    z = torch.randn(6, 4, generator=g, dtype=DT, requires_grad=True)
    losses, rec = m.losses(z, y, torch.arange(6))
    p = torch.softmax(z.detach(), 1)
    torch.testing.assert_close(m.target[:6].double(), p, rtol=1e-6, atol=1e-7)  # the table is float32
    torch.testing.assert_close(rec["agreement"].double(), (p * p).sum(1), rtol=1e-6, atol=1e-7)
    (grad,) = torch.autograd.grad(losses.sum(), z)
    # the target is the prediction, detached: the regulariser's gradient is the closed form at t = p,
    # half of what differentiating log(1 - |p|^2) through both factors gives
    t = m.target[:6].double()
    pt = (p * t).sum(1, keepdim=True)
    closed = p * (pt - t) / (1 - pt)
    torch.testing.assert_close(grad, (p - F.one_hot(y, 4)) + 2.0 * closed, rtol=1e-6, atol=1e-7)


def test_options_are_validated_in_one_line():
    for bad in ({"beta": 1.0}, {"beta": -0.1}, {"lam": -1.0}, {"lam": float("inf")}, {"clamp": 0.5}, {"clamp": -1e-3}):
        with pytest.raises(UserError) as err:
            create_method("elr", **bad)
        assert len(str(err.value).splitlines()) == 1 and "elr" in str(err.value)
    with pytest.raises(UserError, match="option"):
        create_method("elr", lambda_=3)


# -- direction: planted wrong labels on an over-parameterised linear model -----------------------------------
def _planted(seed=0, n=120, d=200, k=3, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, d, generator=g) * 0.25
    clean = torch.arange(n) % k
    x = mu[clean] + torch.randn(n, d, generator=g) * 3 / d ** 0.5
    wrong = torch.rand(n, generator=g) < noise
    given = torch.where(wrong, (clean + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k, clean)
    return x, given, clean, wrong


def _train_linear(tmp_path, name="elr", epochs=100, **options):
    """Full-batch steps of the method on the planted problem; returns (predictions of its evaluation
    model, the last epoch's metrics, its detection scores, (given, clean, wrong))."""
    x, given, clean, wrong = _planted()
    model = torch.nn.Linear(x.shape[1], 3, bias=False)
    torch.nn.init.zeros_(model.weight)
    ctx = _ctx(tmp_path, model, given, clean)
    m = _method(ctx, name, **options)
    idx = torch.arange(len(given))
    for e in range(epochs):
        ctx.epoch = e
        m.start_epoch(ctx)
        m.train_step(ctx, x, given, idx)
        ctx.step += 1
    out = m.end_epoch(ctx)  # the last epoch's records
    with torch.no_grad():
        probs = torch.softmax(m.eval_model(ctx)(x), 1)
    scores = m.sample_scores(ctx, probs, given).numpy()
    return probs.argmax(1), out, scores, (given, clean, wrong)


def test_direction_the_regulariser_keeps_wrong_labels_unfitted_and_the_score_ranks_them_first(tmp_path):
    from noisylabels.eval.metrics import detection_metrics

    pred_ce, _, _, (given, clean, wrong) = _train_linear(tmp_path / "ce", lam=0.0)
    pred, out, scores, _ = _train_linear(tmp_path / "elr", lam=3.0)
    memorised_ce = float((pred_ce[wrong] == given[wrong]).float().mean())
    memorised = float((pred[wrong] == given[wrong]).float().mean())
    assert memorised_ce > 0.9  # plain CE fits the wrong labels of this over-parameterised problem
    assert memorised < 0.1 and float((pred[wrong] == clean[wrong]).float().mean()) > 0.9
    assert out["detection_auroc"] > 0.99  # the per-epoch metric of the declared score (-target_given)
    assert out["mean_target_given_noisy"] < out["mean_target_given_clean"]
    assert detection_metrics(scores, wrong.numpy())["detection_auroc"] > 0.99  # suspects.csv's score


@pytest.mark.parametrize("name", ["elr", "elr-plus"])
@pytest.mark.parametrize("state", ["learned", "flipped"])
def test_detection_score_ranks_the_labels_the_target_rejects_first_in_either_planted_state(tmp_path, state, name):
    """A trained state is planted in the target table(s) (the step only nudges them: beta 0.999):
    ``learned``: the targets follow the clean labels, so the wrong labels must rank first;
    ``flipped``: the targets agree with the wrong labels and reject half of the correct ones,
    which must then rank first: the score follows the target's disagreement with the label,
    whatever the run learned."""
    g = torch.Generator().manual_seed(5)
    n, k = 60, 4
    clean = torch.arange(n) % k
    wrong = torch.arange(n) % 3 == 0
    given = torch.where(wrong, (clean + 1) % k, clean)
    ctx = _ctx(tmp_path, torch.nn.Linear(2, k), given, clean)
    m = _method(ctx, name, beta=0.999)
    rejected = wrong if state == "learned" else (~wrong) & (torch.arange(n) % 2 == 0)
    believed = torch.where(rejected, (given + 2) % k, given)
    with torch.no_grad():
        for table in (m.target, getattr(m, "peer_target", m.target)):
            table.copy_(0.9 * F.one_hot(believed, k) + 0.1 / k)
    m.start_epoch(ctx)
    m.train_step(ctx, torch.randn(n, 2, generator=g), given, torch.arange(n))
    m.end_epoch(ctx)
    scores = m.sample_scores(ctx, torch.full((n, k), 1.0 / k), given).numpy()
    assert scores[rejected.numpy()].min() > scores[~rejected.numpy()].max()
    assert m.score_column == "score_neg_target_given"


# -- a run: resume, folds, detect, export ----------------------------------------------------------------------
def _cfg(tmp_path, name, **over):
    return run_cfg(tmp_path, name, **{"method.name": "elr", "data.train_subset": 400, "train.num_threads": 1, **over})


def _lines(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_resume_is_exact_weights_targets_and_metrics(tmp_path):
    fit(_cfg(tmp_path, "full"))
    fit(_cfg(tmp_path, "part"), stop_after=1)
    fit(_cfg(tmp_path, "part"), resume=True)
    assert _lines(tmp_path / "full") == _lines(tmp_path / "part")
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["per_sample"]["target"], b["per_sample"]["target"])
    assert float(a["per_sample"]["target"].sum()) > 0
    rec = np.load(tmp_path / "full" / "sample_records.npz")
    assert rec["target_given"].shape[0] == 3 and np.isfinite(rec["agreement"]).any()


def test_folds_run_with_elr(tmp_path, capsys):
    out = tmp_path / "cf"
    code = main(["train", "--quiet", "--method", "elr", "--folds", "2", "--epochs", "2", "--out", str(out),
                 "--set", "data.train_subset=200", "--set", "train.num_threads=1"])
    assert code == 0, capsys.readouterr().err
    probs = np.load(out / "pred_probs.npy")
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4) and np.load(out / "held_out.npy").all()
    assert json.loads((out / "fold-0" / "summary.json").read_text())["method"] == "elr"


def test_detect_and_export_on_an_elr_run(tmp_path, capsys):
    from tests.detect.test_detect_cli import _photos

    folder, labels, _ = _photos(tmp_path, n=120)
    run = tmp_path / "run"
    code = main(["train", "--quiet", "--method", "elr", "--dataset", "imagefolder", "--data-dir", str(folder),
                 "--set", f"data.options.labels_csv={labels}", "--noise", "none", "--noise-rate", "0", "--epochs", "2",
                 "--set", "train.num_threads=1", "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    assert (run / "suspects.csv").read_text().splitlines()[0].split(",").count("score_neg_target_given") == 1
    assert json.loads((run / "summary.json").read_text())["loss"] == "elr"
    assert main(["detect", "--run", str(run)]) == 0
    assert main(["export", "--run", str(run), "--drop-issues", "--out", str(tmp_path / "kept.csv")]) == 0
    kept = (tmp_path / "kept.csv").read_text().splitlines()
    assert kept[0].startswith("path") and 1 < len(kept) <= 121
    capsys.readouterr()


def test_a_loss_section_is_refused():
    from noisylabels.train.build import check_names

    with pytest.raises(UserError, match="own loss"):
        check_names(run_cfg(Path("/tmp"), "x", **{"method.name": "elr", "loss.name": "gce"}))
