"""What the method base adds for a paper's file: declared curves (plotted by ``eval.plots``) and
``ctx.build_model`` (a registry model for a method, e.g. EMLC's teacher)."""

import numpy as np
import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.eval.plots import Curve, plot_curve, sample_function
from noisylabels.methods import ERM, register_method
from noisylabels.train import build_context

from tests.helpers import run_cfg


@register_method("test-curves", help="(tests) ERM declaring one line and one per-sample curve")
class _CurvesERM(ERM):
    def curves(self, ctx):
        n = len(ctx.data.splits["train"])
        return [Curve("a_line", [0.0, 1.0, 2.0], [1.0, 0.5, 0.25], "x", "y", title="a line"),
                Curve("a_scatter", np.arange(n), np.ones(n), "index", "one", per_sample=True)]


def test_declared_curves_become_pngs_of_the_run(tmp_path, one_thread):
    ctx = build_context(run_cfg(tmp_path, epochs=1, **{"method.name": "test-curves", "data.train_subset": 200}))
    ctx.method.setup(ctx)
    assert ctx.method.finish(ctx) == {}
    for name in ("a_line", "a_scatter"):
        assert (tmp_path / "run" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curve_with_and_without_ground_truth(tmp_path):
    c = Curve("w", np.linspace(0, 1, 5), np.linspace(1, 0, 5), "alpha", "beta", per_sample=True)
    plot_curve(c, tmp_path / "a.png", is_noisy=np.array([0, 1, 0, 1, 1], bool))
    plot_curve(c, tmp_path / "b.png", is_noisy=None)
    plot_curve(Curve("f", [0, 1], [0, 1], "x", "y"), tmp_path / "c.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in ("a.png", "b.png", "c.png"))


def test_sample_function_is_the_function_on_an_even_grid():
    net = torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    x, y = sample_function(_Wrap(net), -2.0, 2.0, num=9)
    np.testing.assert_allclose(x, np.arange(-2.0, 2.01, 0.5), atol=1e-6)
    with torch.no_grad():
        want = [float(net(torch.tensor([[v]], dtype=torch.float32))) for v in x]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t):
        return self.net(t.reshape(-1, 1)).reshape(-1)


def test_build_model_is_the_students_architecture_or_a_named_one(tmp_path, one_thread):
    ctx = build_context(run_cfg(tmp_path, **{"model.name": "mlp", "model.hidden": [12]}))
    same = ctx.build_model()
    assert [p.shape for p in same.parameters()] == [p.shape for p in ctx.model.parameters()]
    assert same.classifier.in_features == 12 and same.classifier.out_features == ctx.data.num_classes
    assert ctx.build_model("mlp", hidden=[7]).classifier.in_features == 7   # options over the student's
    other = ctx.build_model("lenet")                                       # another name: its own defaults
    assert type(other).__name__ == "LeNet" and other.classifier.out_features == ctx.data.num_classes


def test_build_model_leaves_the_students_init_checkpoint_out(tmp_path, one_thread):
    ctx = build_context(run_cfg(tmp_path, "a", **{"model.name": "mlp"}))
    path = tmp_path / "w.pt"
    torch.save({k: torch.full_like(v, 0.5) for k, v in ctx.model.state_dict().items()}, path)
    ctx = build_context(run_cfg(tmp_path, "b", **{"model.name": "mlp", "model.init_checkpoint": str(path)}))
    assert all(bool((v == 0.5).all()) for v in ctx.model.state_dict().values())
    assert not all(bool((v == 0.5).all()) for v in ctx.build_model().state_dict().values())
    with pytest.raises(UserError, match="no-such-model"):
        ctx.build_model("no-such-model")
