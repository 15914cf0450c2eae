"""Penultimate features of registry models (``models.penultimate``): the helpers and the hook-based tap."""

import pytest
import torch
from torch import nn

from noisylabels.errors import UserError
from noisylabels.models import FeatureTap, check_features, create_model, feature_dim, features, logits_and_features


@pytest.mark.parametrize("name, options", [("mlp", {"hidden": [16]}), ("lenet", {})])
def test_features_are_what_enters_the_classifier(name, options):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_channels=1, image_size=8, **options).double().eval()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    h = features(model, x)
    assert h.shape == (5, feature_dim(model))
    # independently of the helpers: the classifier is the model's last linear layer, z = W h + b
    torch.testing.assert_close(h @ model.classifier.weight.T + model.classifier.bias, model(x))
    logits, h2 = logits_and_features(model, x)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(h2, h)


def test_the_tap_keeps_the_training_forwards_features_detached_and_by_tensor():
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=4, hidden=[8]).train()
    tap = FeatureTap(model, keep=2)
    x1, x2, x3 = (torch.randn(4, 1, 4, 4) for _ in range(3))
    z1 = model(x1)
    h1 = tap.features(x1)
    assert h1 is not None and not h1.requires_grad
    torch.testing.assert_close(h1 @ model.classifier.weight.T + model.classifier.bias, z1.detach())
    assert tap.features(x1.clone()) is None  # by identity: an equal tensor is another input
    model(x2)
    model(x3)  # keep=2: the oldest forward is forgotten
    assert tap.features(x1) is None and tap.features(x2) is not None and tap.features(x3) is not None
    params = {k: v.detach() for k, v in model.named_parameters()}
    tangents = {k: torch.ones_like(v) for k, v in params.items()}
    x4 = torch.randn(4, 1, 4, 4)
    torch.func.jvp(lambda p: torch.func.functional_call(model, p, (x4,)), (params,), (tangents,))
    assert tap.features(x4) is None  # a forward under a torch.func transform is not kept
    tap.remove()
    model(x1)
    assert tap.features(x1) is None


def test_a_model_without_the_form_is_a_one_line_error():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    for call in (lambda: check_features(plain, what="emlc: the teacher's model"), lambda: FeatureTap(plain, what="mlc"),
                 lambda: features(plain, torch.zeros(1, 4))):
        with pytest.raises(UserError) as err:
            call()
        assert "classifier(features(x))" in str(err.value) and "\n" not in str(err.value)
