"""What the method base gives several-network methods: networks with their own optimiser and
schedule, an evaluation module (ensemble), per-sample state, all checkpointed and resumed exactly."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from noisylabels.config import validate
from noisylabels.errors import UserError
from noisylabels.methods import Method, StepOutput, register_method
from noisylabels.methods.context import NetworkSpec
from noisylabels.models import Ensemble
from noisylabels.train import build_context, fit
from noisylabels.train.build import check_names

from tests.helpers import run_cfg


@register_method("test-two-nets", help="(tests) two networks trained side by side, ensemble prediction")
class TwoNets(Method):
    networks = ("peer", NetworkSpec("ema", trainable=False))

    def setup(self, ctx):
        super().setup(ctx)
        self.visits = self.per_sample("visits")

    def eval_model(self, ctx):
        return Ensemble([ctx.model, self.net("peer").model])

    def train_step(self, ctx, x, y, index):
        z = ctx.model(x)
        loss = F.cross_entropy(z, y)
        ctx.backward_and_step(loss)
        peer = self.net("peer")
        ctx.backward_and_step(F.cross_entropy(peer.model(x), y), net=peer)
        with torch.no_grad():
            for e, p in zip(self.net("ema").model.parameters(), peer.model.parameters()):
                e.mul_(0.9).add_(p, alpha=0.1)
            self.visits[index] += 1
        return StepOutput(logits=z.detach(), loss=loss.detach())


def _cfg(tmp_path, name="run", **over):
    return run_cfg(tmp_path, name, **{"method.name": "test-two-nets", "optim.schedule": "cosine", **over})


def _lines(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_networks_start_apart_train_with_their_own_optimiser_and_follow_the_schedule(tmp_path):
    ctx = build_context(_cfg(tmp_path))
    peer, ema = ctx.networks["peer"], ctx.networks["ema"]
    main_w = ctx.model.state_dict()
    assert any(not torch.equal(main_w[k], v) for k, v in peer.model.state_dict().items() if v.is_floating_point())
    assert peer.optimizer is not None and peer.optimizer is not ctx.optimizer
    assert {id(p) for g in peer.optimizer.param_groups for p in g["params"]} == {id(p) for p in peer.model.parameters()}
    assert ema.optimizer is None and not any(p.requires_grad for p in ema.model.parameters())
    with pytest.raises(ValueError, match="not trainable"):
        ctx.backward_and_step(ema.model(torch.zeros(2, 1, 8, 8)).sum(), net=ema)
    for _ in range(5):  # the peer's learning rate follows the run's schedule step by step
        ctx.step_schedules()
        assert peer.optimizer.param_groups[0]["lr"] == pytest.approx(ctx.optimizer.param_groups[0]["lr"])
    assert ctx.optimizer.param_groups[0]["lr"] < float(ctx.cfg["optim"]["lr"])


def test_the_ensemble_is_selected_scored_and_its_accuracy_is_the_mean_probabilities(tmp_path):
    s = fit(_cfg(tmp_path, epochs=2))
    out = tmp_path / "run"
    best = torch.load(out / "best_model.pt", weights_only=True)
    assert any(k.startswith("members.0.") for k in best) and any(k.startswith("members.1.") for k in best)
    ctx = build_context(_cfg(tmp_path, "other", epochs=2))
    models = [ctx.model, ctx.networks["peer"].model]
    for i, m in enumerate(models):
        m.load_state_dict({k.split(".", 2)[2]: v for k, v in best.items() if k.startswith(f"members.{i}.")})
        m.eval()
    data = ctx.data
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = (data.test_images.float() / 255 - mean) / std
    with torch.no_grad():
        p = (torch.softmax(models[0](x), 1) + torch.softmax(models[1](x), 1)) / 2
    acc = float((p.argmax(1) == data.test_labels).float().mean())
    assert s["test_accuracy"] == pytest.approx(acc, abs=1e-6)
    pred = np.load(out / "pred_probs.npy")
    assert np.allclose(pred[len(data.images):], p.numpy(), atol=1e-5)


def test_per_sample_state_counts_each_training_sample_once_per_epoch(tmp_path):
    fit(_cfg(tmp_path, epochs=2))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    visits = ckpt["per_sample"]["visits"]
    ctx = build_context(_cfg(tmp_path, "other"))
    train = ctx.data.splits["train"]
    assert torch.equal(visits[train], torch.full((len(train),), 2.0))
    others = torch.ones(len(visits), dtype=torch.bool)
    others[train] = False
    assert float(visits[others].abs().sum()) == 0.0
    assert set(ckpt["networks"]) == {"peer", "ema"} and ckpt["networks"]["ema"]["optimizer"] == {}


def test_resume_restores_every_network_its_optimiser_and_the_per_sample_state_exactly(tmp_path):
    fit(_cfg(tmp_path, "full", epochs=3))
    fit(_cfg(tmp_path, "part", epochs=3), stop_after=1)
    fit(_cfg(tmp_path, "part", epochs=3), resume=True)
    assert _lines(tmp_path / "full") == _lines(tmp_path / "part")
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for name in ("peer", "ema"):
        for k, v in a["networks"][name]["model"].items():
            assert torch.equal(v, b["networks"][name]["model"][k]), (name, k)
    assert a["networks"]["peer"]["optimizer"]["state"].keys() == b["networks"]["peer"]["optimizer"]["state"].keys()
    assert torch.equal(a["per_sample"]["visits"], b["per_sample"]["visits"])


def test_a_checkpoint_without_the_methods_networks_is_refused(tmp_path):
    fit(run_cfg(tmp_path, "erm", epochs=2, **{"optim.schedule": "cosine"}), stop_after=1)
    cfg = _cfg(tmp_path, "erm", epochs=2)
    ckpt_path = tmp_path / "erm" / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    from noisylabels.train.resume import resume_hash

    ckpt["config_hash"] = resume_hash(check_names(cfg))  # as if written by this config, without networks
    torch.save(ckpt, ckpt_path)
    with pytest.raises(UserError, match="no network"):
        fit(cfg, resume=True, overwrite=True)


def test_ensemble_softmax_is_the_mean_of_the_members_probabilities():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = torch.randn(5, 4)
    p = (torch.softmax(a(x), 1) + torch.softmax(b(x), 1)) / 2
    assert torch.allclose(torch.softmax(Ensemble([a, b])(x), 1), p, atol=1e-6)
    assert torch.allclose(Ensemble([a, b], combine="logits")(x), (a(x) + b(x)) / 2, atol=1e-6)
    with pytest.raises(UserError):
        Ensemble([a], combine="median")


def test_prediction_restores_each_members_own_mode(tmp_path):
    from noisylabels.train import predict_proba

    a, b = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(4, 3))
    b.eval()
    ens = Ensemble([a, b])
    predict_proba(ens, torch.zeros(3, 1, 2, 2, dtype=torch.uint8), None, mean=(0.5,), std=(0.5,), batch_size=2,
                  device=torch.device("cpu"))
    assert a.training and not b.training and ens.training


def test_views_resolve_to_the_methods_and_a_wrong_count_or_kind_is_one_line(tmp_path):
    assert check_names(_cfg(tmp_path))["data"]["views"] == ["weak"]
    assert check_names(_cfg(tmp_path, **{"data.views": ["strong"]}))["data"]["views"] == ["strong"]
    with pytest.raises(UserError, match="takes 1 view"):
        check_names(_cfg(tmp_path, **{"data.views": ["weak", "strong"]}))
    for bad in (["weak", "heavy"], [], "weak", [3]):
        with pytest.raises(UserError, match="data.views"):
            validate({**_cfg(tmp_path), "data": {**_cfg(tmp_path)["data"], "views": bad}})


def test_fp16_is_refused_for_several_networks_before_any_data(tmp_path):
    with pytest.raises(UserError, match="several networks"):
        check_names(_cfg(tmp_path, **{"train.amp": "fp16"}))


@register_method("test-per-sample-bias", help="(tests) a per-sample logit bias with its own optimiser")
class PerSampleBias(Method):
    def setup(self, ctx):
        super().setup(ctx)
        self.bias = self.per_sample("bias", shape=(ctx.data.num_classes,), requires_grad=True)
        self.bias_opt = torch.optim.SGD([self.bias], lr=0.5)

    def train_step(self, ctx, x, y, index):
        z = ctx.model(x).float() + self.bias[index]
        loss = F.cross_entropy(z, y)
        ctx.backward_and_step(loss, also=(self.bias_opt,))
        return StepOutput(logits=z.detach(), loss=loss.detach())


@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_a_methods_own_optimiser_steps_with_the_model_on_fresh_unscaled_gradients(tmp_path, amp):
    """``backward_and_step(also=...)``: per-sample parameters move by -lr * their gradient of this
    step's loss (zeroed first, not accumulated; unscaled under fp16's gradient scaler), only at the
    batch's rows."""
    ctx = build_context(run_cfg(tmp_path, **{"method.name": "test-per-sample-bias", "train.amp": amp,
                                             "data.train_subset": 200}))
    m = ctx.method
    b = next(iter(ctx.loader("train", shuffle=False, augment=False, batch_size=16)))
    ctx.model.train()
    for _ in range(2):  # the second step's gradient must not include the first's
        before = m.bias.detach().clone()
        with ctx.autocast():
            out = m.train_step(ctx, b.x, b.y, b.index)
        grad = (torch.softmax(out.logits, 1) - F.one_hot(b.y, ctx.data.num_classes)) / len(b.y)
        torch.testing.assert_close(m.bias.detach()[b.index], before[b.index] - 0.5 * grad, rtol=2e-3, atol=2e-5)
        rows = torch.ones(len(before), dtype=torch.bool)
        rows[b.index] = False
        assert torch.equal(m.bias.detach()[rows], before[rows])


@register_method("test-own-batches", help="(tests) draws its epoch's batches itself: the first third, twice")
class OwnBatches(Method):
    def epoch_batches(self, ctx, generator):
        idx = ctx.data.splits["train"]
        third = idx[torch.randperm(len(idx), generator=generator)[: len(idx) // 3]]
        return list(ctx.loader(third, shuffle=True, augment=True, generator=generator)) * 2


def test_own_batches_of_another_count_end_each_epoch_where_the_schedule_would(tmp_path):
    over = {"optim.schedule": "cosine", "train.epochs": 3}
    own = _lines_after(fit(run_cfg(tmp_path, "own", **{"method.name": "test-own-batches", **over})), tmp_path / "own")
    plain = _lines_after(fit(run_cfg(tmp_path, "plain", **over)), tmp_path / "plain")
    # the lr a row reports is the one after the epoch's last step: the same position for both
    assert [r["lr"] for r in own] == pytest.approx([r["lr"] for r in plain], abs=1e-12)
    ckpt = torch.load(tmp_path / "own" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] < torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["step"]


def _lines_after(summary, out):
    assert summary["status"] == "finished"
    return _lines(out)


@register_method("test-two-views", help="(tests) trains on the mean CE of a weak and a strong view")
class TwoViews(Method):
    views = ("weak", "strong")
    seen: list = []

    def train_step(self, ctx, x, y, index):
        assert isinstance(x, tuple) and len(x) == 2 and x[0].shape == x[1].shape
        type(self).seen.append(float((x[0] - x[1]).abs().mean()))
        z = ctx.model(torch.cat(x))
        loss = F.cross_entropy(z, torch.cat([y, y]))
        ctx.backward_and_step(loss)
        return StepOutput(logits=z[: len(y)].detach(), loss=loss.detach())


def test_a_two_view_method_gets_a_tuple_of_differently_augmented_views_and_resumes_exactly(tmp_path):
    TwoViews.seen.clear()
    over = {"method.name": "test-two-views", "data.augment": {"crop_padding": 1, "hflip": False}}
    fit(run_cfg(tmp_path, "full", **over))
    assert TwoViews.seen and min(TwoViews.seen) > 0  # the strong view is not the weak one
    fit(run_cfg(tmp_path, "part", **over), stop_after=1)
    fit(run_cfg(tmp_path, "part", **over), resume=True)
    assert _lines(tmp_path / "full") == _lines(tmp_path / "part")
    TwoViews.seen.clear()
    fit(run_cfg(tmp_path, "same", **over, **{"data.views": ["none", "none"]}))
    assert max(TwoViews.seen) == 0.0  # data.views changes the kinds: two unaugmented views are equal
