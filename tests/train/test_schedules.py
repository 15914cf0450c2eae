"""``optim.schedule: cosine-restarts`` (SGDR, as ELR's code steps it) and ``linear-decay`` with the
Adam beta1 switch (Co-teaching's code): the lr and beta1 of every epoch against closed forms written
here, torch's ``CosineAnnealingWarmRestarts`` as a second reference, exact resume, and the one-line
errors."""

import copy
import json
import math

import pytest
import torch

from noisylabels.config import DEFAULTS, validate
from noisylabels.errors import UserError
from noisylabels.train import build_scheduler, fit
from noisylabels.train.optim import lr_factor
from noisylabels.train.resume import check_more_epochs

from tests.helpers import run_cfg

SPE = 3  # steps per epoch


def _optim(**over):
    cfg = copy.deepcopy(DEFAULTS["optim"])
    cfg.update(over)
    return cfg


def _per_epoch(cfg, epochs, *, name="sgd"):
    """(lr, beta1) seen by every step of every epoch, from a real optimiser stepped per step."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = (torch.optim.Adam([p], lr=cfg["lr"], betas=tuple(cfg["betas"])) if name == "adam"
           else torch.optim.SGD([p], lr=cfg["lr"], momentum=0.9))
    sched = build_scheduler(opt, cfg, steps_per_epoch=SPE, epochs=epochs)
    seen = []
    for _ in range(epochs):
        epoch = set()
        for _ in range(SPE):
            g = opt.param_groups[0]
            epoch.add((g["lr"], g["betas"][0] if "betas" in g else None))
            opt.step()
            sched.step()
        assert len(epoch) == 1  # per epoch, as the authors' code steps them
        seen.append(epoch.pop())
    return seen


# -- cosine with warm restarts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("t0, mult", [(4, 1), (2, 2), (1, 1), (3, 3)])
def test_cosine_restarts_lr_is_sgdr_per_epoch(t0, mult):
    lr, eta_min, epochs = 0.02, 1e-3, 20
    seen = [a for a, _ in _per_epoch(_optim(lr=lr, schedule="cosine-restarts", restart_epochs=t0, restart_mult=mult,
                                            min_lr=eta_min), epochs)]
    # SGDR Eq. 5 by hand: the periods T_0, T_0 m, T_0 m^2, ... start at 0, T_0, T_0 (1 + m), ...
    starts, length, begin = [], t0, 0
    while begin < epochs:
        starts.append((begin, length))
        begin, length = begin + length, length * mult
    expected = []
    for e in range(epochs):
        b, t_i = max(s for s in starts if s[0] <= e)
        expected.append(eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (e - b) / t_i)) / 2)
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert seen[t0] == pytest.approx(lr)  # the first restart is back at lr
    # torch's CosineAnnealingWarmRestarts, stepped once per epoch as ELR's trainer does
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t0, T_mult=mult, eta_min=eta_min)
    torch_lrs = []
    for _ in range(epochs):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert seen == pytest.approx(torch_lrs, rel=1e-9)


def test_cosine_decays_to_min_lr_per_step_as_cosine_annealing_lr():
    """``cosine`` with ``min_lr``: torch's CosineAnnealingLR(T_max = all steps, eta_min) stepped per
    step (SOP+'s official schedule: T_max 300 epochs, eta_min 2e-4); ``min_lr`` 0 is the old curve."""
    lr, eta_min, spe, epochs = 0.02, 2e-4, 3, 5
    total = spe * epochs
    seen = [lr * lr_factor(s, steps_per_epoch=spe, epochs=epochs, cfg=_optim(lr=lr, schedule="cosine", min_lr=eta_min))
            for s in range(total + 1)]
    expected = [eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t / total)) / 2 for t in range(total + 1)]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert seen[-1] == pytest.approx(eta_min) and seen[0] == pytest.approx(lr)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=eta_min)
    torch_lrs = []
    for _ in range(total):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    assert seen[:total] == pytest.approx(torch_lrs, rel=1e-9)
    zero = [lr_factor(s, steps_per_epoch=spe, epochs=epochs, cfg=_optim(lr=lr, schedule="cosine"))
            for s in range(total)]
    assert zero == pytest.approx([(1 + math.cos(math.pi * t / total)) / 2 for t in range(total)], rel=1e-12)


def test_elr_official_cifar10_schedule():
    # ELR/config_cifar10.json: lr 0.02, CosineAnnealingWarmRestarts(T_0=10, eta_min=0.001)
    seen = [a for a, _ in _per_epoch(_optim(lr=0.02, schedule="cosine-restarts", restart_epochs=10, min_lr=1e-3), 21)]
    assert seen[0] == pytest.approx(0.02) and seen[10] == pytest.approx(0.02) and seen[20] == pytest.approx(0.02)
    assert seen[5] == pytest.approx(1e-3 + (0.02 - 1e-3) / 2)
    assert seen[9] == pytest.approx(1e-3 + (0.02 - 1e-3) * (1 + math.cos(math.pi * 0.9)) / 2)


# -- linear decay and Adam's beta1 ---------------------------------------------------------------------------
@pytest.mark.parametrize("epochs, start", [(10, 4), (7, 0), (5, 4)])
def test_linear_decay_and_beta1_follow_the_coteaching_code_plans(epochs, start):
    lr = 0.001
    cfg = _optim(name="adam", lr=lr, schedule="linear-decay", decay_start=start, decay_beta1=0.1)
    seen = _per_epoch(cfg, epochs, name="adam")
    # bhanML/Co-teaching main.py, written out: alpha_plan / beta1_plan
    alpha_plan, beta1_plan = [lr] * epochs, [0.9] * epochs
    for i in range(start, epochs):
        alpha_plan[i] = float(epochs - i) / (epochs - start) * lr
        beta1_plan[i] = 0.1
    assert [a for a, _ in seen] == pytest.approx(alpha_plan, rel=1e-12)
    assert [b for _, b in seen] == beta1_plan
    assert seen[-1][0] == pytest.approx(lr / (epochs - start))  # one step short of 0
    # without decay_beta1 beta1 stays
    kept = _per_epoch(_optim(name="adam", lr=lr, schedule="linear-decay", decay_start=start), epochs, name="adam")
    assert {b for _, b in kept} == {0.9}


def test_the_restarted_schedule_switches_beta1_relative_to_its_restart():
    from noisylabels.train.build import build_run_schedule

    cfg = {"optim": _optim(name="adam", lr=1.0, schedule="linear-decay", decay_start=2, decay_beta1=0.1),
           "train": {"epochs": 8}}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = build_run_schedule(opt, cfg, SPE, start_epoch=4)  # 4 epochs left, decay from their 2nd
    g = opt.param_groups[0]
    assert g["lr"] == 1.0 and g["betas"][0] == 0.9
    for _ in range(2 * SPE):
        opt.step()
        sched.step()
    assert g["lr"] == pytest.approx(1.0) and g["betas"][0] == 0.1
    for _ in range(SPE):
        opt.step()
        sched.step()
    assert g["lr"] == pytest.approx(0.5)


# -- resume -----------------------------------------------------------------------------------------------------
def _lines(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


SMALL = {"data.train_subset": 300, "model.hidden": [16], "train.num_threads": 1}


@pytest.mark.parametrize("over, stop", [
    ({"method.name": "coteaching", "method.num_gradual": 2, "optim.name": "adam", "optim.lr": 0.01,
      "optim.schedule": "linear-decay", "optim.decay_start": 2, "optim.decay_beta1": 0.1}, 2),
    ({"method.name": "erm", "optim.schedule": "cosine-restarts", "optim.restart_epochs": 2, "optim.min_lr": 0.01}, 1),
])
def test_resume_mid_run_equals_uninterrupted(tmp_path, over, stop):
    cfg = lambda name: run_cfg(tmp_path, name, epochs=4, **SMALL, **over)  # noqa: E731
    fit(cfg("full"))
    fit(cfg("part"), stop_after=stop)
    fit(cfg("part"), resume=True)
    full, part = _lines(tmp_path / "full"), _lines(tmp_path / "part")
    assert full == part
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert a["scheduler"] == b["scheduler"] and "beta1_fn" not in a["scheduler"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if over["method.name"] == "coteaching":
        for opt in (a["optimizer"], a["networks"]["peer"]["optimizer"]):
            assert opt["param_groups"][0]["betas"][0] == 0.1  # both networks switched


def test_more_epochs_on_resume_only_for_schedules_that_do_not_span_the_run():
    cfg = {"train": {"epochs": 6}, "method": {"name": "erm"},
           "optim": _optim(schedule="linear-decay", decay_start=2)}
    with pytest.raises(UserError, match="linear-decay schedule spans"):
        check_more_epochs(cfg, before=4, run=2)
    cfg["optim"] = _optim(schedule="cosine-restarts")
    check_more_epochs(cfg, before=4, run=2)  # restarts do not depend on the run's length


# -- errors -------------------------------------------------------------------------------------------------------
def _validate(epochs=10, **optim):
    cfg = copy.deepcopy(DEFAULTS)
    cfg["train"]["epochs"] = epochs
    cfg["optim"].update(optim)
    validate(cfg)


@pytest.mark.parametrize("optim, match", [
    ({"schedule": "cosine-restarts", "restart_epochs": -1}, "optim.restart_epochs must be an integer"),
    ({"schedule": "cosine-restarts", "restart_epochs": 0}, "optim.restart_epochs must be an integer"),
    ({"schedule": "cosine-restarts", "restart_mult": 0}, "optim.restart_mult must be an integer"),
    ({"schedule": "cosine-restarts", "min_lr": -0.1}, r"optim.min_lr must be a number in \[0"),
    ({"schedule": "cosine-restarts", "min_lr": 0.5, "lr": 0.1}, "optim.min_lr must be at most optim.lr"),
    ({"schedule": "linear-decay", "decay_start": 10}, r"optim.decay_start must be below train.epochs \(10\)"),
    ({"schedule": "linear-decay", "decay_start": 12}, "optim.decay_start must be below"),
    ({"schedule": "linear-decay", "decay_start": -1}, "optim.decay_start must be an integer"),
    ({"schedule": "linear-decay", "name": "adam", "decay_beta1": 1.0}, r"optim.decay_beta1 must be a number in \[0, 1\)"),
    ({"schedule": "linear-decay", "name": "adam", "decay_beta1": -0.1}, "optim.decay_beta1 must be a number"),
    ({"schedule": "linear-decay", "name": "sgd", "decay_beta1": 0.1}, "optim.decay_beta1 needs optim.name=adam"),
    ({"schedule": "cosine", "restart_epochs": 5}, "optim.restart_epochs applies to optim.schedule=cosine-restarts"),
    ({"schedule": "cosine", "min_lr": 0.5, "lr": 0.1}, "optim.min_lr must be at most optim.lr"),
    ({"schedule": "multistep", "min_lr": 0.01}, "optim.min_lr applies to optim.schedule=cosine or cosine-restarts"),
    ({"schedule": "multistep", "decay_start": 5}, "optim.decay_start applies to optim.schedule=linear-decay"),
])
def test_bad_schedule_options_are_one_line_user_errors(optim, match):
    with pytest.raises(UserError, match=match) as err:
        _validate(**optim)
    assert "\n" not in str(err.value)


def test_beta1_with_sgd_is_refused_by_the_scheduler_too():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(UserError, match="needs optim.name=adam"):
        build_scheduler(torch.optim.SGD([p], lr=0.1), _optim(schedule="linear-decay", decay_beta1=0.1),
                        steps_per_epoch=1, epochs=3)


def test_valid_options_pass():
    _validate(schedule="cosine-restarts", restart_epochs=10, restart_mult=2, min_lr=1e-3, lr=0.02)
    _validate(epochs=200, schedule="linear-decay", decay_start=80, decay_beta1=0.1, name="adam", lr=0.001)
