"""Models that start from a user's state-dict file (``model.init_checkpoint``) and the ``timm:``
adapter (a stand-in timm module here; the real one where it imports)."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from noisylabels.errors import UserError
from noisylabels.models import create_model


def mlp(seed: int, **kw):
    return create_model("mlp", num_classes=3, in_channels=1, image_size=4, seed=seed, **kw)


def test_registered_model_starts_from_a_state_dict_file(tmp_path):
    src = mlp(1)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    got = mlp(2, init_checkpoint=str(path))
    fresh = mlp(2)
    for k, v in src.state_dict().items():
        assert torch.equal(got.state_dict()[k], v)
    assert not torch.equal(fresh.state_dict()["classifier.weight"], src.state_dict()["classifier.weight"])
    # wrapped layouts: this library's checkpoint.pt ({"model": ...}), DataParallel's "module." prefix
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "ck.pt")
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "dp.pt")
    for name in ("ck.pt", "dp.pt"):
        assert torch.equal(mlp(2, init_checkpoint=str(tmp_path / name)).classifier.weight, src.classifier.weight)


def test_init_exclude_keeps_a_new_head_at_its_fresh_init(tmp_path):
    other = create_model("mlp", num_classes=7, in_channels=1, image_size=4, seed=1)  # 7 classes
    torch.save(other.state_dict(), tmp_path / "w.pt")
    got = mlp(2, init_checkpoint=str(tmp_path / "w.pt"), init_exclude=["classifier"])
    assert torch.equal(got.classifier.weight, mlp(2).classifier.weight)
    body = [k for k in other.state_dict() if not k.startswith("classifier")]
    assert body and all(torch.equal(got.state_dict()[k], other.state_dict()[k]) for k in body)


@pytest.mark.parametrize("case, message", [
    ("missing", "model.init_checkpoint: file not found"),
    ("shape", "shape mismatch (file vs model) for 2 tensor(s): classifier.weight (7, 256) vs (3, 256)"),
    ("extra", "1 unexpected key(s) (extra.weight)"),
    ("fewer", "1 missing key(s) (classifier.bias)"),
    ("pickled", "is not a readable state dict (weights_only load"),
    ("text", "is not a readable state dict"),
    ("notdict", "does not hold a state dict of tensors"),
])
def test_bad_init_checkpoints_are_one_line_errors(tmp_path, case, message):
    sd = mlp(1).state_dict()
    path = tmp_path / "w.pt"
    if case == "shape":
        torch.save(create_model("mlp", num_classes=7, in_channels=1, image_size=4).state_dict(), path)
    elif case == "extra":
        torch.save({**sd, "extra.weight": torch.zeros(2)}, path)
    elif case == "fewer":
        torch.save({k: v for k, v in sd.items() if k != "classifier.bias"}, path)
    elif case == "pickled":  # a callable inside: refused by weights_only, never executed
        torch.save({"x": torch.zeros(1), "f": print}, path)
    elif case == "text":
        path.write_text("not a checkpoint")
    elif case == "notdict":
        torch.save([torch.zeros(1)], path)
    with pytest.raises(UserError) as info:
        mlp(2, init_checkpoint=str(path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_fit_starts_from_init_checkpoint(tmp_path):
    """The loop's model comes from create_model: the first epoch starts at the file's weights."""
    from noisylabels.config import resolve_config
    from noisylabels.train import build_context

    cfg = resolve_config(overrides={"out": str(tmp_path / "a"), "train.epochs": 1})
    ctx = build_context(cfg)
    torch.save(ctx.model.state_dict(), tmp_path / "w.pt")
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.add_(1.0)
    torch.save(ctx.model.state_dict(), tmp_path / "shifted.pt")
    cfg2 = resolve_config(overrides={"out": str(tmp_path / "b"), "train.epochs": 1, "seed": 5,
                                     "model.init_checkpoint": str(tmp_path / "shifted.pt")})
    ctx2 = build_context(cfg2)
    for (k, a), b in zip(ctx2.model.state_dict().items(), ctx.model.state_dict().values()):
        assert torch.equal(a, b), k


# -- timm -----------------------------------------------------------------------------------------
class _FakeTimmNet(nn.Module):
    """The parts of timm's model interface the adapter uses (forward_features / forward_head /
    get_classifier / num_features), as in timm's ResNet."""

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 6, 3)
        self.num_features = 6
        self.fc = nn.Linear(6, num_classes)

    def forward_features(self, x):
        return torch.relu(self.conv1(x))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc


@pytest.fixture
def fake_timm(monkeypatch):
    mod = types.ModuleType("timm")

    def create(name, *, num_classes, in_chans, **kw):
        if name != "resnet_tiny":
            raise RuntimeError(f"Unknown model ({name})")
        return _FakeTimmNet(num_classes, in_chans, **kw)

    mod.create_model = create
    monkeypatch.setitem(sys.modules, "timm", mod)
    return mod


def test_timm_prefix_adapts_features_and_classifier(fake_timm, tmp_path):
    model = create_model("timm:resnet_tiny", num_classes=4, in_channels=2, seed=0, drop_rate=0.1)
    x = torch.randn(3, 2, 8, 8)
    f = model.features(x)
    assert f.shape == (3, model.num_features) and model.classifier is model.net.fc
    torch.testing.assert_close(model.classifier(f), model(x))
    same = create_model("timm:resnet_tiny", num_classes=4, in_channels=2, seed=0)
    assert torch.equal(same.net.conv1.weight, model.net.conv1.weight)  # seeded like every model
    # a checkpoint of the timm network itself (timm's key names), with its own head replaced
    imagenet = _FakeTimmNet(1000, 2)
    torch.save(imagenet.state_dict(), tmp_path / "pretrained.pth")
    got = create_model("timm:resnet_tiny", num_classes=4, in_channels=2, seed=0,
                       init_checkpoint=str(tmp_path / "pretrained.pth"), init_exclude=["fc"])
    assert torch.equal(got.net.conv1.weight, imagenet.conv1.weight)
    assert torch.equal(got.net.fc.weight, model.net.fc.weight)
    with pytest.raises(UserError, match=r"fc.weight \(1000, 6\) vs \(4, 6\)"):
        create_model("timm:resnet_tiny", num_classes=4, in_channels=2, init_checkpoint=str(tmp_path / "pretrained.pth"))


def test_timm_errors_are_one_line(fake_timm, monkeypatch):
    with pytest.raises(UserError, match=r"model 'timm:nope': Unknown model \(nope\)"):
        create_model("timm:nope", num_classes=4)
    with pytest.raises(UserError, match="needs a timm model name"):
        create_model("timm:", num_classes=4)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UserError, match=r'needs timm: pip install "noisylabels\[timm\]"'):
        create_model("timm:resnet18", num_classes=4)


def _real_timm():
    try:
        import timm
    except Exception as err:  # noqa: BLE001  (absent, or a torchvision that does not load)
        pytest.skip(f"timm not importable: {type(err).__name__}")
    return timm


def test_real_timm_resnet18_through_the_adapter():
    _real_timm()
    model = create_model("timm:resnet18", num_classes=5, in_channels=3, seed=0).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.classifier(model.features(x)), model(x))
    assert model(x).shape == (2, 5)
