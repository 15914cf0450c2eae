"""The meta schedules (noisylabels.meta.schedule): when phi updates and what an update accumulates."""

from types import SimpleNamespace

import pytest
import torch

from noisylabels.errors import UserError
from noisylabels.meta.schedule import DiscountedAccumulation, EveryK, LookaheadWindow


def test_every_k_and_the_window_pick_their_meta_steps():
    assert [t for t in range(9) if EveryK(3).is_meta_step(t)] == [0, 3, 6]
    assert [t for t in range(9) if LookaheadWindow(3).is_meta_step(t)] == [2, 5, 8]  # t mod k = k - 1
    assert EveryK(1).meta_every_step and not EveryK(2).meta_every_step
    assert not LookaheadWindow(2).meta_every_step and DiscountedAccumulation(2).meta_every_step


def _res(scale_a, scale_b, va, vb):
    """An engine result whose tangent is s * g_w(w_{t+1}) per parameter."""
    return SimpleNamespace(tangent={"a": scale_a * va, "b": scale_b * vb}, scale={"a": scale_a, "b": scale_b})


def test_discounted_accumulation_applies_g_plus_gamma_times_the_carry_every_k_th_step(tmp_path):
    """A_t = G_t + gamma_t A_(t-1), applied at (t + 1) mod k = 0 (k = 2), gamma by hand:
    g(w_t) = ([1, 2], [2]) (squared norm 9), g(w_{t+1}) = ([3, 0], [3]), s = (0.1, 0.5):
    gamma = (0.9 * 3 + 0.5 * 6) / 9."""
    sch = DiscountedAccumulation(2)
    sch.g_prev = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([2.0])}
    res = _res(0.1, 0.5, torch.tensor([3.0, 0.0]), torch.tensor([3.0]))
    gamma = (0.9 * 3.0 + 0.5 * 6.0) / 9.0
    g0, g1 = [torch.tensor([1.0, -1.0])], [torch.tensor([0.5, 2.0])]
    kw = dict(model=None, optimizer=None, phi=[], loss_layer=None)
    assert sch.accumulate(0, g0, res, **kw) is None  # the carry, nothing applied
    state = sch.state_dict()
    torch.save(state, tmp_path / "s.pt")
    other = DiscountedAccumulation(2)
    other.g_prev = sch.g_prev
    other.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True), device=torch.device("cpu"))
    for s in (sch, other):
        out = s.accumulate(1, [g.clone() for g in g1], res, **kw)
        torch.testing.assert_close(out[0], torch.tensor([0.5 + gamma * 1.0, 2.0 - gamma * 1.0]))
        assert s.acc is None and s.state_dict() == {}


def test_checkpoint_keys_are_the_ones_before_the_schedule_existed():
    sch = DiscountedAccumulation(3)
    sch.acc = [torch.ones(2)]
    assert list(sch.state_dict()) == ["mlc_acc"]
    assert list(LookaheadWindow(2).state_dict()) == ["window"] and EveryK(2).state_dict() == {}
    with pytest.raises(UserError):
        DiscountedAccumulation(1)
