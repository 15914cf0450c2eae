"""SOP / SOP+ (Liu et al., ICML 2022): the noise parameterisation, each loss's gradients against
closed forms written here from the equations ([E1]-[E6] in ``noisylabels.methods.sop``), the sparse
per-sample SGD, the limiting case u = v = 0, the direction of the learned noise and of the
detection score, and everything the base gives a method (records, checkpoints, exact resume)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.errors import UserError
from noisylabels.eval.metrics import detection_metrics
from noisylabels.methods import SOP, create_method
from noisylabels.methods.sop import class_balance, consistency_kl, corrected_prediction, noise_entries
from noisylabels.train import build_context, fit

from tests.helpers import run_cfg

D = torch.float64


def _method(u, v, *, u_loss="ce", cls=SOP, **kw):
    """An SOP whose u, v are the given tensors (no run needed for the loss terms)."""
    m = cls(u_loss=u_loss, **kw)
    m.u, m.v = u, v
    return m


def _problem(seed=0, b=6, k=4):
    """Logits, labels and u, v small enough that no clamp of [E1] or [E4] is active."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=D) * 0.7
    y = torch.randint(0, k, (b,), generator=g)
    u = (torch.rand(b, 1, generator=g, dtype=D) * 0.8).requires_grad_()
    v = (torch.rand(b, k, generator=g, dtype=D) * 0.2).requires_grad_()
    return z, y, u, v


# ----------------------------------------------------------------------------- the equations by hand
def test_noise_is_plus_u_squared_on_the_given_label_and_minus_v_squared_elsewhere_clamped():
    u = torch.tensor([[0.5], [1.5], [-0.3]], dtype=D)
    v = torch.tensor([[0.2, 0.4, 2.0], [0.1, 0.0, 0.3], [-0.6, 0.5, 0.7]], dtype=D)
    y = torch.tensor([0, 2, 1])
    U, V = noise_entries(u, v, F.one_hot(y, 3).to(D))
    s = U - V
    want = torch.tensor([[0.25, -0.16, -1.0],        # v^2 = 4 clamps to 1
                         [-0.01, 0.0, 1.0],          # u^2 = 2.25 clamps to 1, on label 2
                         [-0.36, 0.09, -0.49]], dtype=D)
    torch.testing.assert_close(s, want)
    assert (U >= 0).all() and (V >= 0).all()


def test_corrected_prediction_is_p_plus_s_renormalised_and_identity_at_s_zero():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]], dtype=D)
    s = torch.tensor([[0.0, 0.3, -0.05], [0.0, 0.0, 0.0]], dtype=D)
    q = corrected_prediction(p, s)
    torch.testing.assert_close(q[0], torch.tensor([0.7, 0.5, 0.05], dtype=D) / 1.25)
    torch.testing.assert_close(q[1], torch.tensor([0.5, 0.5, 1e-4], dtype=D) / 1.0001)  # the clamp at eps
    torch.testing.assert_close(corrected_prediction(p[:1], torch.zeros(1, 3, dtype=D)), p[:1])


@pytest.mark.parametrize("u_loss", ["ce", "ce+mse", "mse"])
def test_gradients_to_logits_u_and_v_match_the_closed_forms(u_loss):
    """[E4]: L_CE = -log(p_y + U) + log(1 + U - sum V) (clamps inactive) with V stopped;
    [E5]: L_MSE = sum_c (yhat_c + U_c - V_c - y_c)^2 with no gradient to the network."""
    z, y, u, v = _problem()
    z = z.requires_grad_()
    m = _method(u, v, u_loss=u_loss)
    idx = torch.arange(len(y))
    t = m.loss_terms(z, y, idx)
    (t["ce"] + t["mse"]).backward()
    b, k = z.shape
    Y = F.one_hot(y, k).to(D)
    p = torch.softmax(z.detach(), 1)
    U = (u.detach() ** 2).clamp(0, 1) * Y
    V = (v.detach() ** 2).clamp(0, 1) * (1 - Y)
    Uy, py = U.sum(1), (p * Y).sum(1)
    S = 1 + Uy - V.sum(1)
    assert ((p + U - V) > 1e-4).all()  # no clamp active: the closed forms hold
    # logits: CE's gradient p - e_y scaled by p_y / (p_y + U) ([E4]); the MSE term gives none
    g_z = (py / (py + Uy))[:, None] * (p - Y) / b
    torch.testing.assert_close(z.grad, g_z)
    # u: dU/du = 2u; CE part -1/(p_y + U) + 1/S, MSE part 2 (yhat_y + U - 1)
    yhat = F.one_hot(z.detach().argmax(1), k).to(D)
    d_ce = -1 / (py + Uy) + 1 / S
    d_mse = 2 * ((yhat * Y).sum(1) + Uy - 1)
    d_u = {"ce": d_ce, "ce+mse": d_ce + d_mse, "mse": d_mse}[u_loss]
    torch.testing.assert_close(u.grad, (d_u * 2 * u.detach().squeeze(1) / b)[:, None])
    # v: the MSE term only, -2 (yhat_c - V_c) * 2 v_c off the label, nothing on it
    torch.testing.assert_close(v.grad, -2 * (yhat - V) * 2 * v.detach() * (1 - Y) / b)


def test_ce_term_gradient_to_logits_matches_finite_differences():
    z, y, u, v = _problem(seed=3)
    m = _method(u.detach(), v.detach())

    def ce(zz):
        return m.loss_terms(zz, y, torch.arange(len(y)))["ce"]

    assert torch.autograd.gradcheck(ce, (z.clone().requires_grad_(),), eps=1e-6, atol=1e-7)


def test_at_u_v_zero_the_loss_is_ce_plus_a_constant_and_u_v_get_no_gradient():
    """The limiting case: u = v = 0 is a fixed point where [E4] is CE and [E5] is 2 * 1[argmax != y]."""
    z, y, _, _ = _problem(seed=1)
    z = z.requires_grad_()
    u, v = torch.zeros(len(y), 1, dtype=D, requires_grad=True), torch.zeros(len(y), 4, dtype=D, requires_grad=True)
    m = _method(u, v, u_loss="ce+mse")
    t = m.loss_terms(z, y, torch.arange(len(y)))
    torch.testing.assert_close(t["ce"], F.cross_entropy(z, y))
    torch.testing.assert_close(t["mse"], 2 * (z.argmax(1) != y).to(D).mean())
    (t["ce"] + t["mse"]).backward()
    torch.testing.assert_close(z.grad, torch.autograd.grad(F.cross_entropy(z, y), z)[0])
    assert float(u.grad.abs().max()) == 0.0 and float(v.grad.abs().max()) == 0.0


def test_consistency_is_kl_from_the_weak_prediction_and_trains_the_strong_view_only():
    g = torch.Generator().manual_seed(2)
    zw = torch.randn(5, 3, generator=g, dtype=D).requires_grad_()
    zs = torch.randn(5, 3, generator=g, dtype=D).requires_grad_()
    pw, ps = torch.softmax(zw.detach(), 1), torch.softmax(zs.detach(), 1)
    kl = consistency_kl(zw, zs)
    torch.testing.assert_close(kl, (pw * (pw / ps).log()).sum(1))
    kl.sum().backward()
    assert zw.grad is None or float(zw.grad.abs().max()) == 0.0  # the weak view is a fixed target
    torch.testing.assert_close(zs.grad, ps - pw)                   # d KL / d z_strong = p_s - p_w


def test_class_balance_is_cross_entropy_of_the_uniform_prior_and_the_batch_mean():
    q = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.6, 0.4, 0.0]], dtype=D)
    mean = torch.tensor([1.4, 0.7, 0.9], dtype=D) / 3
    torch.testing.assert_close(class_balance(q), -(mean.log()).sum() / 3)
    uniform = torch.full((4, 3), 1 / 3, dtype=D)
    torch.testing.assert_close(class_balance(uniform), torch.tensor(np.log(3.0), dtype=D))  # its minimum, log K
    torch.testing.assert_close(class_balance(torch.tensor([[1.0, 0.0, 0.0]], dtype=D)),
                               -torch.tensor(2 * np.log(1e-4) / 3, dtype=D))  # the clamp at eps


# ----------------------------------------------------------------------------- direction
def _frozen_network_run(*, lr_u, lr_v, steps=40, seed=0):
    """u, v trained by SOP's own SGD on a fixed network that has learned the true classes (p = 0.99)
    of samples whose given labels are 30% wrong: returns (||s||_1, is_wrong)."""
    g = torch.Generator().manual_seed(seed)
    n, k = 200, 5
    clean = torch.randint(0, k, (n,), generator=g)
    wrong = torch.rand(n, generator=g) < 0.3
    given = torch.where(wrong, (clean + torch.randint(1, k, (n,), generator=g)) % k, clean)
    z = torch.log(torch.full((n, k), 0.01 / (k - 1), dtype=D).scatter(1, clean[:, None], 0.99))
    u = (torch.randn(n, 1, generator=g, dtype=D) * 1e-3).requires_grad_()
    v = (torch.randn(n, k, generator=g, dtype=D) * 1e-3).requires_grad_()
    m = _method(u, v)
    opt = torch.optim.SGD([{"params": [u], "lr": lr_u}, {"params": [v], "lr": lr_v}], lr=lr_u)
    idx = torch.arange(n)
    for _ in range(steps):
        opt.zero_grad()
        t = m.loss_terms(z, given, idx)
        (t["ce"] + t["mse"]).backward()
        opt.step()
    s = m.loss_terms(z, given, idx)["noise"].sum(0)
    return s.numpy(), wrong.numpy()


@pytest.mark.parametrize("lr_u,lr_v", [(20.0, 0.0), (0.0, 20.0), (20.0, 20.0)])
def test_the_wrong_labels_noise_grows_whether_u_or_v_learns_it(lr_u, lr_v):
    """With planted wrong labels, ||s_i||_1 ends larger on every wrong label than on any right one,
    through u alone ([E4]), v alone ([E5]) or both. The step per sample is small (lr / n = 0.1), so a
    sign slip (+v^2 in [E5], -u^2 in [E4]) shrinks that part instead of overshooting into growth."""
    s, wrong = _frozen_network_run(lr_u=lr_u, lr_v=lr_v)
    assert s[wrong].min() > 10 * s[~wrong].max()
    assert s[wrong].mean() > 0.5  # the noise is learned, not only ordered


def test_detection_ranks_noisy_first_whichever_way_u_or_v_carries_the_noise(tmp_path):
    """The score is +||s_i||_1 (s_given + the v part) at the selected epoch, by hand; it ranks the
    corrupted labels first when the noise sits in u only and when it sits in v only."""
    ctx = build_context(run_cfg(tmp_path, **{"method.name": "sop", "data.train_subset": 300}))
    m, data = ctx.method, ctx.data
    idx = data.splits["train"]
    noisy = data.is_noisy[idx]
    for way in ("u", "v"):
        with torch.no_grad():
            m.u.zero_()
            m.v.zero_()
            big = torch.where(noisy, 0.9, 0.05).to(m.u.dtype)
            if way == "u":
                m.u[idx, 0] = big
            else:  # on the class after the given one
                m.v[idx, (data.labels[idx] + 1) % data.num_classes] = big
        m.start_epoch(ctx)
        z = torch.randn(len(idx), data.num_classes)
        m.note_noise(idx, m.loss_terms(z, data.labels[idx], idx))
        m.end_epoch(ctx)
        scores = m.sample_scores(ctx, torch.softmax(z, 1), data.labels[idx]).numpy()
        by_hand = np.where(noisy.numpy(), 0.81, 0.0025)
        np.testing.assert_allclose(scores, by_hand, rtol=1e-6)
        assert detection_metrics(scores, noisy.numpy())["detection_auroc"] == 1.0
    assert m.score_column == "score_s_norm"


# ----------------------------------------------------------------------------- the run
def _cfg(tmp_path, name="run", method="sop", **over):
    base = {"method.name": method, "data.train_subset": 400, "train.batch_size": 32}
    if method.startswith("sop"):
        base["method.init_std"] = 1e-3
    return run_cfg(tmp_path, name, **{**base, **over})


def test_one_step_is_plain_sgd_on_u_and_v_at_the_batchs_rows_only(tmp_path):
    """[E2] u, v ~ N(0, init_std^2); [E3] one step moves the batch's rows by -lr_u * dL/du and
    -lr_v * dL/dv (the closed forms of [E4], [E5] at the logits the step used) and no other row."""
    ctx = build_context(_cfg(tmp_path, **{"method.lr_u": 3.0, "method.lr_v": 7.0}))
    m, k = ctx.method, ctx.data.num_classes
    groups = m.uv_optimizer.param_groups
    assert groups[0]["params"][0] is m.u and groups[1]["params"][0] is m.v
    assert all(g["momentum"] == 0 and g["weight_decay"] == 0 and not g["nesterov"] for g in groups)
    u0, v0 = m.u.detach().clone().double(), m.v.detach().clone().double()
    assert u0.shape == (len(ctx.data.labels), 1) and v0.shape == (len(ctx.data.labels), k)
    for t in (u0, v0):  # N(0, 1e-3^2)
        assert abs(float(t.std()) / 1e-3 - 1) < 0.15 and abs(float(t.mean())) < 2e-4
        assert 0.4 < float((t < 0).double().mean()) < 0.6
    b = next(iter(ctx.loader("train", shuffle=True, augment=True, generator=torch.Generator().manual_seed(0))))
    ctx.model.train()
    m.start_epoch(ctx)
    out = m.train_step(ctx, b.x, b.y, b.index)
    z, i, n = out.logits.double(), b.index, len(b.y)
    Y = F.one_hot(b.y, k).double()
    p = torch.softmax(z, 1)
    U, V = (u0[i] ** 2).clamp(0, 1) * Y, (v0[i] ** 2).clamp(0, 1) * (1 - Y)
    py, Uy = (p * Y).sum(1), U.sum(1)
    d_u = (-1 / (py + Uy) + 1 / (1 + Uy - V.sum(1))) * 2 * u0[i, 0] / n
    yhat = F.one_hot(z.argmax(1), k).double()
    d_v = -2 * (yhat - V) * 2 * v0[i] * (1 - Y) / n
    torch.testing.assert_close(m.u.detach().double()[i, 0], u0[i, 0] - 3.0 * d_u, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(m.v.detach().double()[i], v0[i] - 7.0 * d_v, rtol=1e-4, atol=1e-9)
    rows = torch.zeros(len(u0), dtype=torch.bool)
    rows[i] = True
    assert torch.equal(m.u.detach().double()[~rows], u0[~rows]) and torch.equal(m.v.detach().double()[~rows], v0[~rows])
    assert not any(m.uv_optimizer.state.values())  # no momentum buffers


def test_init_std_zero_stays_at_the_fixed_point_and_trains_like_ce(tmp_path):
    fit(_cfg(tmp_path, "sop", epochs=2, **{"method.init_std": 0.0}))
    fit(_cfg(tmp_path, "ce", method="erm", epochs=2))
    a = torch.load(tmp_path / "sop" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "ce" / "checkpoint.pt", weights_only=True)
    assert float(a["per_sample"]["u"].abs().max()) == 0.0 and float(a["per_sample"]["v"].abs().max()) == 0.0
    for k, w in b["model"].items():
        torch.testing.assert_close(a["model"][k], w, rtol=1e-4, atol=1e-5)


def test_a_short_run_learns_more_noise_on_the_corrupted_labels(tmp_path):
    s = fit(_cfg(tmp_path, epochs=3))
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["mean_s_norm_noisy"] > 3 * last["mean_s_norm_clean"]
    assert s["detection_auroc"] > 0.8
    recs = np.load(tmp_path / "run" / "sample_records.npz")
    assert {"s_given", "s_norm"} <= set(recs.files)


@pytest.mark.parametrize("method", ["sop", "sop-plus"])
def test_resume_restores_u_v_and_their_optimiser_exactly(tmp_path, method):
    small = {"data.train_subset": 200}
    fit(_cfg(tmp_path, "full", method, epochs=3, **small))
    fit(_cfg(tmp_path, "part", method, epochs=3, **small), stop_after=1)
    fit(_cfg(tmp_path, "part", method, epochs=3, **small), resume=True)
    lines = [(tmp_path / r / "metrics.jsonl").read_text() for r in ("full", "part")]
    assert lines[0] == lines[1]
    a, b = (torch.load(tmp_path / r / "checkpoint.pt", weights_only=True) for r in ("full", "part"))
    for name in ("u", "v"):
        assert torch.equal(a["per_sample"][name], b["per_sample"][name])
    for k, w in a["model"].items():
        assert torch.equal(w, b["model"][k]), k
    assert a["method"]["uv_optimizer"]["param_groups"][1]["lr"] == 10.0
    assert a["method"] == b["method"]


def test_options_are_validated_in_one_line():
    for bad in ({"lr_u": -1.0}, {"lr_v": float("nan")}, {"init_std": float("inf")}, {"init_std": 2.0},
                {"u_loss": "both"}):
        with pytest.raises(UserError, match="sop") as err:
            create_method("sop", **bad)
        assert "\n" not in str(err.value)
    for bad in ({"consistency": -0.5}, {"balance": float("nan")}):
        with pytest.raises(UserError, match="sop-plus"):
            create_method("sop-plus", **bad)


def test_a_loss_section_is_refused(tmp_path):
    from noisylabels.train.build import check_names

    with pytest.raises(UserError, match="own loss"):
        check_names(run_cfg(tmp_path, **{"method.name": "sop", "loss.name": "gce"}))


# ----------------------------------------------------------------------------- SOP+
def test_sop_plus_step_is_sop_on_the_weak_view_plus_the_weighted_regularisers_by_hand(tmp_path):
    ctx = build_context(_cfg(tmp_path, method="sop-plus", **{"method.consistency": 0.7, "method.balance": 0.3}))
    m = ctx.method
    assert m.views == ("weak", "strong") and ctx.views == ("weak", "strong")
    idx = ctx.data.splits["train"][:8]
    g = torch.Generator().manual_seed(0)
    shape = (8, *ctx.data.images.shape[1:])
    xw, xs = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    y = ctx.data.labels[idx]
    with torch.no_grad():  # noise large enough that phi(p + s) is far from p (the balance term reads phi(p + s))
        m.u[idx] = torch.rand(8, 1, generator=g) * 0.8
        m.v[idx] = torch.rand(8, ctx.data.num_classes, generator=g) * 0.5
        ctx.model.eval()  # no batch-norm / dropout randomness between the hand computation and the step
        z_all = ctx.model(torch.cat([xw, xs])).double()
        zw, zs = z_all[:8], z_all[8:]
        k = ctx.data.num_classes
        Y = F.one_hot(y, k).double()
        U = (m.u[idx].double() ** 2).clamp(0, 1) * Y
        V = (m.v[idx].double() ** 2).clamp(0, 1) * (1 - Y)
        q = (torch.softmax(zw, 1) + U - V).clamp(min=1e-4)
        q = (q / q.sum(1, keepdim=True)).clamp(1e-4, 1)
        ce = -(Y * q.log()).sum(1).mean()
        mse = ((F.one_hot(zw.argmax(1), k).double() + U - V - Y) ** 2).sum(1).mean()
        pw, ps = torch.softmax(zw, 1), torch.softmax(zs, 1)
        kl = (pw * (pw.log() - ps.log())).sum(1).mean()
        bal = -q.mean(0).clamp(1e-4, 1).log().mean()
        want = ce + mse + 0.7 * kl + 0.3 * bal
    out = m.train_step(ctx, (xw, xs), y, idx)
    assert float(out.loss) == pytest.approx(float(want), rel=1e-5)
    torch.testing.assert_close(out.logits.double(), zw, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the CLI: --folds, detect, export
def _photo_folder(root, n=120, seed=0):
    """A flat folder of digit PNGs and a ``path,label`` CSV with every fifth label moved to the next
    class (export needs file-backed data)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.random.default_rng(seed).choice(len(d.target), n, replace=False)
    rows = ["path,label"]
    for j, i in enumerate(keep):
        Image.fromarray(np.clip(np.round(d.images[i] * 255 / 16), 0, 255).astype(np.uint8)).save(root / f"{j}.png")
        rows.append(f"{j}.png,c{(int(d.target[i]) + (j % 5 == 0)) % 10}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_folds_detect_and_export_run_on_sop_plus(tmp_path, capsys):
    """``train --folds 2`` of the two-view method scores every sample by fold models (the network
    alone predicts), each fold a full run with SOP's records; ``detect --run`` and ``export
    --drop-issues`` work on what it wrote."""
    import csv

    from noisylabels.cli import main

    labels = _photo_folder(tmp_path)
    out = tmp_path / "cf"
    argv = ["train", "--out", str(out), "--folds", "2", "--quiet", "--dataset", "imagefolder", "--data-dir",
            str(tmp_path), "--noise", "none", "--noise-rate", "0", "--epochs", "1", "--method", "sop-plus",
            "--set", f"data.options.labels_csv={labels}", "--set", "train.num_threads=1",
            "--set", "method.init_std=1.0e-3", "--set", "data.strong_augment=cutout"]
    assert main(argv) == 0, capsys.readouterr().err
    probs = np.load(out / "pred_probs.npy")
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    for k in range(2):
        assert {"s_given", "s_norm"} <= set(np.load(out / f"fold-{k}" / "sample_records.npz").files)
    assert main(["detect", "--run", str(out)]) == 0, capsys.readouterr().err
    with open(out / "label_issues.csv", newline="") as fh:
        issues = list(csv.DictReader(fh))
    flagged = {r["path"] for r in issues if r["is_label_issue"] == "1"}
    clean = tmp_path / "clean.csv"
    assert main(["export", "--run", str(out), "--drop-issues", "--out", str(clean)]) == 0, capsys.readouterr().err
    with open(clean, newline="") as fh:
        kept = {r["path"] for r in csv.DictReader(fh)}
    assert kept == {r["path"] for r in issues} - flagged and kept


def test_on_several_processes_u_v_rows_step_by_the_global_mean_without_an_all_reduce(tmp_path):
    """Data-parallel [E3]: rank 1 of 2 steps its slice's rows of u, v by -lr times the *global* batch
    mean's gradient (its slice mean weighted by n_r / n: the 1-process row update, closed form of
    [E4], [E5] with the global n), moves no other row, and all-reduces only the model's gradients
    (the rows are merged after the epoch, never a dense (N, K) all-reduce per step)."""
    from noisylabels.train.distributed import Distributed

    reduced = []

    class Rank1(Distributed):
        @property
        def active(self):
            return True

        def all_reduce_sum_(self, tensors):
            reduced.extend(t.shape for t in tensors)

    ctx = build_context(_cfg(tmp_path, **{"method.lr_u": 3.0, "method.lr_v": 7.0}))
    m, k, N = ctx.method, ctx.data.num_classes, len(ctx.data.labels)
    ctx.dist = Rank1(rank=1, world_size=2)
    u0, v0 = m.u.detach().clone().double(), m.v.detach().clone().double()
    b = next(iter(ctx.loader("train", shuffle=True, augment=True, generator=torch.Generator().manual_seed(0))))
    n = len(b.y)
    sl = ctx.dist.shard(n)
    ctx.model.train()
    m.start_epoch(ctx)
    out = m.train_step(ctx, b.x[sl], b.y[sl], b.index[sl])
    z, i = out.logits.double(), b.index[sl]
    Y = F.one_hot(b.y[sl], k).double()
    p = torch.softmax(z, 1)
    U, V = (u0[i] ** 2).clamp(0, 1) * Y, (v0[i] ** 2).clamp(0, 1) * (1 - Y)
    py, Uy = (p * Y).sum(1), U.sum(1)
    d_u = (-1 / (py + Uy) + 1 / (1 + Uy - V.sum(1))) * 2 * u0[i, 0] / n  # the global batch's mean: 1 / n
    d_v = -2 * (F.one_hot(z.argmax(1), k).double() - V) * 2 * v0[i] * (1 - Y) / n
    torch.testing.assert_close(m.u.detach().double()[i, 0], u0[i, 0] - 3.0 * d_u, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(m.v.detach().double()[i], v0[i] - 7.0 * d_v, rtol=1e-4, atol=1e-9)
    rows = torch.zeros(N, dtype=torch.bool)
    rows[i] = True
    assert torch.equal(m.u.detach().double()[~rows], u0[~rows]) and torch.equal(m.v.detach().double()[~rows], v0[~rows])
    assert reduced and all(s[0] != N for s in reduced)  # the model's gradients only
    m.uv_optimizer.param_groups[1]["momentum"] = 0.9  # a row outside the slice would move: refused
    with pytest.raises(ValueError, match="plain SGD"):
        m.train_step(ctx, b.x[sl], b.y[sl], b.index[sl])
