"""Cost of one meta-reweighting training step relative to a plain ERM step, and its peak memory.

For each model (CIFAR ResNet-32 on 3x32x32 inputs, the MNIST CNN ``lenet`` on 1x28x28; 10
classes; batch 100 train and 100 meta by default) this times one full training step of

* ``erm``              -- the library's ERM step (forward, CE, backward, SGD step);
* ``erm-10``           -- the same, timed in units of 10 steps (the baseline of ``mwnet-interval10``);
* ``mwnet``            -- Meta-Weight-Net, exact meta-gradient (one JVP pass on the training
  forward's recorded graph, :mod:`noisylabels.meta.graph_jvp`);
* ``mwnet-jvp-func``   -- the same step with the JVP by :func:`torch.func.jvp` (re-runs the forward);
* ``mwnet-delayed``    -- MW-Net with ``delayed=True`` (real step reuses the virtual step's gradient);
* ``mwnet-interval10`` -- MW-Net with ``meta_interval=10`` (10 consecutive steps timed, / 10);
* ``l2rw``             -- learning to reweight (per-example weights by one JVP);
* ``l2b``              -- learning to bootstrap, after its warm-up epochs;
* ``narl``             -- NARL-Adjuster (A-GCE) with a meta step at every step (the same computation
  as ``mwnet`` with another loss layer; target: at most 5% slower, for measurement noise);
* ``narl-interval10``  -- NARL at the paper's meta interval 10 (10 consecutive steps timed, / 10);
* ``mlc``              -- MLC (label-correction net on the student's detached features), one-step
  look-ahead, exact meta-gradient by one JVP; ``mlc-double-backward``: the same step by the public
  MLC code's path (a differentiable virtual step and a backward through it);
* ``emlc``             -- EMLC k = 1: teacher (a second copy of the student's architecture + gate)
  forward, the engine's exact meta-gradient (graph-walk JVP of the student's training forward,
  VJP through the teacher's soft labels), teacher CE + gate BCE on the clean batch, two teacher
  optimisers; ``emlc-official``: the same step the way the public EMLC code computes it (student
  step, clean gradient at the new weights, a *re-forward* JVP of the old student by forward-mode AD,
  teacher VJP): ``meta_gradient="jvp-func"``; ``emlc-k5``: k = 5 (FPMG over 5 stored steps; 5-step
  units against 5-step ERM units), whose peak memory holds the 4 stored student copies;
* ``double-backward``  -- the reference path (what the official MW-Net code costs): MW-Net's step
  with ``meta_gradient="double-backward"`` (:func:`noisylabels.meta.meta_gradient_double_backward`: differentiable virtual step,
  backpropagation through it), the weight net's step, then the real step on the same forward.

Every variant goes through the code users run: a real :class:`~noisylabels.train.TrainContext`
from :func:`noisylabels.train.build_context` (model, SGD lr 0.1 momentum 0.9 weight decay 5e-4,
method set up) on an in-memory :class:`~noisylabels.train.RunData` of random images, then
``method.train_step(ctx, x, y, index)``. The meta batch is fixed (the method's
``next_meta_batch`` is replaced by one returning it) so no data pipeline is timed.

Timing: a variant timed in units of several steps (``mwnet-interval10``) is compared with ERM
timed in units of as many steps (``erm-10``: consecutive steps run with warm caches, which on
LeNet makes each ERM step about 25% cheaper than a lone one). Every variant starts each timed unit
from the same state (model, SGD momentum buffers,
weight net and its Adam state restored outside the timed region); warm-up rounds, then repeats
interleaved round-robin across variants (so background load hits all alike); median ms per step
and the ratio to the median ERM step of the same process.

Peak memory: each variant runs alone in a fresh process: after its warm-up (lazy initialisation
excluded), one timed unit is run under ``torch.profiler`` (``profile_memory=True``) and the peak of
the tensor bytes allocated and not yet freed during it is reported (MiB above what the model,
optimiser states and batches already hold: the step's own working memory). Resident memory is not
used on the CPU: it is dominated by allocator caching and one-time initialisation. On CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the unit.

After each table, the JVP pass alone is timed both ways (graph walk on a recorded forward,
:func:`torch.func.jvp`) and shown against the same ERM step.

Targets (printed beside the ratios): exact MW-Net <= 3.5x ERM, delayed <= 2.8x, interval 10 <=
1.3x, L2B within 10% of L2RW (L2B / L2RW <= 1.10), every JVP-based variant's peak memory below
the double-backward path's; MLC k = 1 <= 3.5x ERM; EMLC k = 1 at least 1.15x faster than the
official-style path (``emlc-official`` / ``emlc`` >= 1.15). Anchors: the official MW-Net step
costs 6.1-6.3x a plain step on CIFAR ResNet-32, batch 100, 2 CPU threads; the public MLC step
5.9x (``hmlc_K_mix`` 6.9x), the public EMLC teacher + student step 5.1-5.2x.

Usage::

    python benchmarks/meta_speed.py [--models resnet32,lenet] [--threads 2] [--repeats 7]
        [--warmup 2] [--batch-size 100] [--meta-batch-size 100] [--device cpu] [--amp none|bf16] [--no-memory]
        [--variants erm,mwnet,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from noisylabels.config import resolve_config
from noisylabels.meta.engine import functional_jvp
from noisylabels.meta.functional import params_and_buffers
from noisylabels.meta.graph_jvp import graph_jvp
from noisylabels.methods import MetaBatch
from noisylabels.models import create_model
from noisylabels.train import RunData, TrainContext, build_context

__all__ = ["main", "VARIANTS", "MODELS"]

#: model name -> (in_channels, image_size)
MODELS: dict[str, tuple[int, int]] = {"resnet32": (3, 32), "lenet": (1, 28)}
NUM_CLASSES = 10

#: variant -> (method config, steps per timed unit)
VARIANTS: dict[str, tuple[dict[str, Any], int]] = {
    "erm": ({"name": "erm"}, 1),
    "erm-10": ({"name": "erm"}, 10),
    "mwnet": ({"name": "mwnet"}, 1),
    "mwnet-jvp-func": ({"name": "mwnet", "meta_gradient": "jvp-func"}, 1),
    "mwnet-delayed": ({"name": "mwnet", "delayed": True}, 1),
    "mwnet-interval10": ({"name": "mwnet", "meta_interval": 10}, 10),
    "l2rw": ({"name": "l2rw"}, 1),
    "l2b": ({"name": "l2b"}, 1),
    "narl": ({"name": "narl", "meta_interval": 1}, 1),
    "narl-interval10": ({"name": "narl", "meta_interval": 10}, 10),
    "mlc": ({"name": "mlc"}, 1),
    "mlc-double-backward": ({"name": "mlc", "meta_gradient": "double-backward"}, 1),
    "emlc": ({"name": "emlc"}, 1),
    "emlc-official": ({"name": "emlc", "meta_gradient": "jvp-func"}, 1),
    "erm-5": ({"name": "erm"}, 5),
    "emlc-k5": ({"name": "emlc", "k": 5}, 5),
    "double-backward": ({"name": "mwnet", "meta_gradient": "double-backward"}, 1),
}
LABELS = {"erm-10": "erm (10-step units)", "mwnet": "mwnet (exact)", "mwnet-jvp-func": "mwnet (exact, torch.func.jvp)", "mwnet-delayed": "mwnet delayed", "mwnet-interval10": "mwnet interval 10",
          "narl": "narl A-GCE (meta step every step)", "narl-interval10": "narl A-GCE interval 10 (the paper's)",
          "double-backward": "double-backward (reference)", "mlc": "mlc k=1 (exact, JVP)",
          "mlc-double-backward": "mlc k=1 (public code's double backward)", "emlc": "emlc k=1 (engine, exact)",
          "emlc-official": "emlc k=1 (official-style: re-forward JVP + teacher VJP)", "erm-5": "erm (5-step units)",
          "emlc-k5": "emlc k=5 (FPMG, 5-step units)"}
SPEED_TARGETS = {"mwnet": 3.5, "mwnet-delayed": 2.8, "mwnet-interval10": 1.3, "narl-interval10": 1.3,
                 "mlc": 3.5}  # x ERM
#: the engine's EMLC k = 1 step at least this much faster than the official-style path
EMLC_VS_OFFICIAL = 1.15
#: a NARL meta step is MW-Net's computation with another loss layer: at most this much slower
NARL_VS_MWNET = 1.05
L2B_VS_L2RW = 1.10
ANCHOR = "official MW-Net: 6.1-6.3x"
JVP_VARIANTS = ("mwnet", "mwnet-jvp-func", "mwnet-delayed", "mwnet-interval10", "l2rw", "l2b", "narl", "narl-interval10",
                "mlc")


# -- building one variant -------------------------------------------------------------------------------
def synthetic_data(model: str, *, batch_size: int, meta_batch_size: int, seed: int) -> RunData:
    """A :class:`RunData` whose pool is one random training batch followed by one random meta batch."""
    channels, size = MODELS[model]
    gen = torch.Generator().manual_seed(seed)
    n = batch_size + meta_batch_size
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return RunData(images=images, labels=labels, clean_labels=labels.clone(),
                   splits={"train": torch.arange(batch_size), "val": torch.arange(0),
                           "meta": torch.arange(batch_size, n)},
                   test_images=images[:0], test_labels=labels[:0], classes=[str(k) for k in range(NUM_CLASSES)],
                   mean=(0.5,) * channels, std=(0.25,) * channels, augment=None, transition=np.eye(NUM_CLASSES))


@dataclass
class Variant:
    """One variant's context, its fixed batches and a callable running one timed unit."""

    name: str
    ctx: TrainContext
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    steps_per_unit: int
    saved: dict[str, Any] = field(default_factory=dict)
    nonfinite: bool = False

    @property
    def method(self) -> Any:
        return self.ctx.method

    def step(self) -> Any:
        with self.ctx.autocast():  # entered per step, as the training loop does (``train.amp``)
            return self.method.train_step(self.ctx, self.x, self.y, self.index)

    def run_unit(self) -> None:
        """``steps_per_unit`` consecutive training steps (as the loop runs them: ``ctx.step`` counts)."""
        for _ in range(self.steps_per_unit):
            out = self.step()
            self.ctx.step += 1
            if not math.isfinite(float(out.loss)):
                self.nonfinite = True

    # state restored before every timed unit
    def _modules(self) -> list[torch.nn.Module]:
        return [self.ctx.model] + ([self.method.meta_net] if hasattr(self.method, "meta_net") else [])

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        meta = getattr(self.method, "meta_opts", None) or ([self.method.meta_opt] if hasattr(self.method, "meta_opt")
                                                            else [])
        return [self.ctx.optimizer] + list(meta)

    def snapshot(self) -> None:
        self.saved = {"modules": [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in self._modules()],
                      "optimizers": [copy.deepcopy(o.state_dict()) for o in self._optimizers()]}

    def restore(self) -> None:
        for m, s in zip(self._modules(), self.saved["modules"]):
            m.load_state_dict(s)
        # Optimizer.load_state_dict keeps the given tensors (same dtype/device): copy, or the step
        # would update the snapshot's momentum buffers in place
        for o, s in zip(self._optimizers(), self.saved["optimizers"]):
            o.load_state_dict(copy.deepcopy(s))
        self.ctx.step = 0


def build_variant(name: str, model: str, *, batch_size: int, meta_batch_size: int, device: str, seed: int,
                  out: str, amp: str = "none") -> Variant:
    """A real :class:`TrainContext` (``build_context``) for one variant, with a fixed meta batch;
    ``amp`` is the run's ``train.amp`` (``"bf16"``: each step under bf16 autocast, as in training)."""
    method_cfg, steps = VARIANTS[name]
    method_cfg = dict(method_cfg)
    if method_cfg["name"] != "erm":
        method_cfg["meta_batch_size"] = meta_batch_size
    cfg = resolve_config(overrides={
        "seed": seed, "device": device, "out": os.path.join(out, name), "model": {"name": model},
        "method": method_cfg, "data.augment": "none",
        "optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 5e-4,
        "optim.nesterov": False, "optim.schedule": "none", "optim.warmup_epochs": 0,
        "train.batch_size": batch_size, "train.clip_grad_norm": None, "train.amp": amp,
    })
    data = synthetic_data(model, batch_size=batch_size, meta_batch_size=meta_batch_size, seed=seed)
    ctx = build_context(cfg, data=data)  # seeds the global RNG: every variant gets the same initial model
    ctx.model.train()
    ctx.epoch = int(getattr(ctx.method, "warmup_epochs", 0))  # L2B: past its plain-CE warm-up
    ctx.method.start_epoch(ctx)
    # one batch of each split through the real loader (outside any timing)
    train = next(iter(ctx.loader("train", shuffle=False, augment=False)))
    meta = next(iter(ctx.loader("meta", shuffle=False, augment=False, batch_size=meta_batch_size)))
    dev = ctx.device
    if ctx.method.needs_meta_set:
        fixed = MetaBatch(meta.x.to(dev), meta.y.to(dev), meta.index.to(dev))
        ctx.next_meta_batch = lambda batch_size=None: fixed  # fixed meta batch: no pipeline in the timing
    return Variant(name, ctx, train.x.to(dev), train.y.to(dev), train.index.to(dev), steps)


# -- timing ---------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_model(model: str, names: list[str], *, batch_size: int, meta_batch_size: int, device: str, seed: int,
               repeats: int, warmup: int, amp: str = "none") -> dict[str, dict[str, Any]]:
    """Median ms per training step of each variant (round-robin, same starting state); ``amp`` as
    in :func:`build_variant`."""
    with tempfile.TemporaryDirectory(prefix="meta_speed_") as out:
        variants = {n: build_variant(n, model, batch_size=batch_size, meta_batch_size=meta_batch_size,
                                     device=device, seed=seed, out=out, amp=amp) for n in names}
        # common starting state: one ERM step from the initial model (SGD momentum buffers exist)
        ref = variants["erm"]
        ref.run_unit()
        common_model = {k: v.detach().clone() for k, v in ref.ctx.model.state_dict().items()}
        common_opt = copy.deepcopy(ref.ctx.optimizer.state_dict())
        for v in variants.values():
            # one unit primes the method's own state (weight net's Adam moments), then the model and
            # its optimiser go back to the common state
            v.ctx.model.load_state_dict(common_model)
            v.ctx.optimizer.load_state_dict(copy.deepcopy(common_opt))
            v.run_unit()
            v.ctx.model.load_state_dict(common_model)
            v.ctx.optimizer.load_state_dict(copy.deepcopy(common_opt))
            v.snapshot()

        times: dict[str, list[float]] = {n: [] for n in names}
        order = list(names)
        for r in range(warmup + repeats):
            for n in order:
                v = variants[n]
                v.restore()
                gc.collect()
                gc.disable()
                _sync(device)
                t0 = time.perf_counter()
                v.run_unit()
                _sync(device)
                dt = (time.perf_counter() - t0) / v.steps_per_unit
                gc.enable()
                if r >= warmup:
                    times[n].append(dt * 1e3)
            order = order[1:] + order[:1]  # rotate: no variant always runs right after the same one
        if any(v.nonfinite for v in variants.values()):
            print(f"warning ({model}): non-finite loss in "
                  f"{', '.join(n for n, v in variants.items() if v.nonfinite)}", file=sys.stderr)
    return {n: {"ms": statistics.median(t), "min_ms": min(t), "times_ms": t} for n, t in times.items()}


def time_jvp_alone(model: str, *, batch_size: int, device: str, seed: int, repeats: int,
                   warmup: int) -> dict[str, float]:
    """Median ms of the JVP pass alone (``u = J z . t`` on the training batch, every parameter),
    by the graph walk on a recorded forward and by :func:`torch.func.jvp` (train mode)."""
    channels, size = MODELS[model]
    net = create_model(model, num_classes=NUM_CLASSES, in_channels=channels, image_size=size, seed=seed)
    net.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, size, size, generator=gen).to(device)
    params, buffers = params_and_buffers(net)
    tangent = {n: torch.randn(p.shape, generator=gen).to(device) for n, p in params.items()}
    z = net(x)  # the recorded training forward (its cost is part of every step, not of the JVP)
    by_param = {params[n]: t for n, t in tangent.items()}
    runs = {"graph": lambda: graph_jvp(z, by_param),
            "func": lambda: functional_jvp(net, params=params, buffers=buffers, x=x, tangent=tangent)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(warmup + repeats):
        for k, fn in runs.items():
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            _sync(device)
            if r >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(t) for k, t in times.items()}


def _erm_baseline(res: dict[str, dict[str, Any]], name: str) -> float:
    """ERM ms per step timed in units of the same number of steps as ``name``: a unit of several
    consecutive steps runs with warm caches, which on small models makes each step measurably
    cheaper (LeNet: about 25%), so a 10-step unit is compared with 10-step ERM units."""
    steps = VARIANTS[name][1]
    same = f"erm-{steps}"
    if steps > 1 and name != same and same in res:
        return res[same]["ms"]
    if steps > 1 and name != "erm-10" and "erm-10" in res:
        return res["erm-10"]["ms"]
    return res["erm"]["ms"]


# -- memory (fresh process per variant) -----------------------------------------------------------------
def _proc_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _profiled_peak_bytes(run: Callable[[], None]) -> float | None:
    """Peak of CPU tensor bytes allocated (minus freed) while ``run`` runs, from the profiler's
    allocation events; ``None`` if this torch's profiler does not expose them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        cur = peak = 0
        for e in events:
            if e.device_type() == torch.autograd.DeviceType.CPU:
                cur += e.nbytes()
                peak = max(peak, cur)
    except (AttributeError, RuntimeError):
        return None
    return float(peak)


def memory_child(model: str, name: str, *, batch_size: int, meta_batch_size: int, device: str, seed: int,
                 warmup: int, amp: str = "none") -> dict[str, Any]:
    """Peak memory (MiB) of one timed unit of one variant, above the memory held before it.

    The warm-up units (at least one) run first, so lazy initialisation (kernels, ``torch.func``,
    optimiser states) is not counted. CPU: the peak of tensor bytes allocated and not yet freed
    during the unit (profiler allocation events; gradients are released before it so that every
    block freed inside was allocated inside), else the peak resident memory above the resident
    memory before it. CUDA: ``torch.cuda.max_memory_allocated`` above the allocation before it.
    """
    with tempfile.TemporaryDirectory(prefix="meta_speed_") as out:
        v = build_variant(name, model, batch_size=batch_size, meta_batch_size=meta_batch_size, device=device,
                          seed=seed, out=out, amp=amp)
        for _ in range(max(1, warmup)):
            v.run_unit()
        for o in v._optimizers():  # every method zeroes them (set_to_none) before its backward anyway
            o.zero_grad(set_to_none=True)
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            v.run_unit()
            torch.cuda.synchronize()
            return {"peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20,
                    "how": "cuda max_memory_allocated above the allocation before the step"}
        peak = _profiled_peak_bytes(v.run_unit)
        if peak is not None:
            return {"peak_mib": peak / 2**20, "how": "peak of tensor bytes allocated during the step (profiler)"}
        rss = _proc_kib("VmRSS")
        exact = rss is not None and _reset_hwm()
        before = rss if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        v.run_unit()
        after = _proc_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if platform.system() == "Darwin" and not exact:  # ru_maxrss is in bytes there
            after, before = after // 1024, before // 1024
        return {"peak_mib": (after - before) / 1024,
                "how": "VmHWM - VmRSS before the step" if exact else "ru_maxrss increase (lower bound)"}


def measure_memory(model: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, "--models", model,
           "--threads", str(args.threads), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
           "--meta-batch-size", str(args.meta_batch_size), "--device", args.device, "--seed", str(args.seed),
           "--amp", args.amp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"warning: memory run of {model}/{name} failed: {tail[0]}", file=sys.stderr)
        return {"peak_mib": None}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------------
def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def evaluate_targets(res: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target: what it is, the measured value, whether it is met (``None``: not measured)."""
    out = []
    for n, limit in SPEED_TARGETS.items():
        if n in res:
            r = res[n]["ratio"]
            out.append({"variant": n, "target": f"<= {limit}x ERM", "value": r, "met": r <= limit})
    if "l2b" in res and "l2rw" in res:
        r = res["l2b"]["ms"] / res["l2rw"]["ms"]
        out.append({"variant": "l2b", "target": f"L2B/L2RW <= {L2B_VS_L2RW}", "value": r, "met": r <= L2B_VS_L2RW})
    if "narl" in res and "mwnet" in res:
        r = res["narl"]["ms"] / res["mwnet"]["ms"]
        out.append({"variant": "narl", "target": f"NARL/MW-Net step <= {NARL_VS_MWNET}", "value": r,
                    "met": r <= NARL_VS_MWNET})
    if "emlc" in res and "emlc-official" in res:
        r = res["emlc-official"]["ms"] / res["emlc"]["ms"]
        out.append({"variant": "emlc", "target": f"official-style / engine >= {EMLC_VS_OFFICIAL}", "value": r,
                    "met": r >= EMLC_VS_OFFICIAL})
    db = res.get("double-backward", {}).get("peak_mib")
    for n in JVP_VARIANTS:
        p = res.get(n, {}).get("peak_mib")
        if n in res and db is not None and p is not None:
            out.append({"variant": n, "target": "peak memory < double-backward", "value": p, "met": p < db})
    return out


def print_table(model: str, res: dict[str, dict[str, Any]], targets: list[dict[str, Any]],
                args: argparse.Namespace) -> None:
    print(f"\n### {model}: batch {args.batch_size} (meta {args.meta_batch_size}), {args.threads} threads, "
          f"{args.device}, amp {args.amp}; median of {args.repeats} after {args.warmup} warm-up\n")
    print("| variant | ms/step | × ERM | target | met | peak MiB |")
    print("|---|---:|---:|---|---|---:|")
    db_peak = res.get("double-backward", {}).get("peak_mib")
    by = {(t["variant"], t["target"].startswith("peak")): t for t in targets}
    for n, r in res.items():
        speed = by.get((n, False))
        if n == "double-backward":
            target, met = f"reference ({ANCHOR})", "—"
        elif speed is None:
            target, met = "—", "—"
        elif n == "l2b":
            target, met = f"≤ {L2B_VS_L2RW:.2f}× L2RW (is {speed['value']:.2f}×)", "yes" if speed["met"] else "NO"
        elif n == "narl":
            target, met = f"≤ {NARL_VS_MWNET:.2f}× MW-Net (is {speed['value']:.2f}×)", "yes" if speed["met"] else "NO"
        elif n == "emlc":
            target, met = (f"≥ {EMLC_VS_OFFICIAL:.2f}× faster than official-style (is {speed['value']:.2f}×)",
                           "yes" if speed["met"] else "NO")
        else:
            target, met = f"≤ {SPEED_TARGETS[n]}×", "yes" if speed["met"] else "NO"
        peak = _fmt(r.get("peak_mib"))
        mem = by.get((n, True))
        if mem is not None:
            peak += " (< DB)" if mem["met"] else " (NOT < DB)"
        print(f"| {LABELS.get(n, n)} | {r['ms']:.1f} | {r['ratio']:.2f} | {target} | {met} | {peak} |")
    speed_t = [t for t in targets if not t["target"].startswith("peak")]
    mem_t = [t for t in targets if t["target"].startswith("peak")]
    parts = [f"speed targets met {sum(t['met'] for t in speed_t)}/{len(speed_t)}"]
    if mem_t:
        parts.append(f"peak memory below double-backward ({_fmt(db_peak)} MiB) "
                     f"{sum(t['met'] for t in mem_t)}/{len(mem_t)}")
    if "mwnet" in res and "mwnet-jvp-func" in res:
        parts.append(f"torch.func.jvp / graph JVP step time: {res['mwnet-jvp-func']['ms'] / res['mwnet']['ms']:.2f}×")
    if "mwnet" in res and "double-backward" in res:
        parts.append(f"double-backward / exact MW-Net time: {res['double-backward']['ms'] / res['mwnet']['ms']:.2f}×")
    if "mlc" in res and "mlc-double-backward" in res:
        parts.append(f"MLC public-code path / engine: {res['mlc-double-backward']['ms'] / res['mlc']['ms']:.2f}×")
    k1, k5 = res.get("emlc", {}).get("peak_mib"), res.get("emlc-k5", {}).get("peak_mib")
    if k1 is not None and k5 is not None:
        parts.append(f"EMLC peak memory k=5 {k5:.1f} MiB vs k=1 {k1:.1f} MiB")
    missed = [f"{t['variant']} ({t['target']}: {t['value']:.2f})" for t in targets if not t["met"]]
    print(f"\n{model}: " + "; ".join(parts) + (f". Missed: {', '.join(missed)}" if missed else ". All met."))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet32,lenet", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma list (erm is always included)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--meta-batch-size", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", default="none", choices=["none", "bf16"],
                    help="train.amp of every variant: bf16 autocast entered per step, as the training loop does")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-variant peak-memory processes")
    ap.add_argument("--json", default=None, metavar="PATH", help="also save the numbers as JSON")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    bad = [m for m in models if m not in MODELS] + [n for n in names if n not in VARIANTS]
    if bad or args.repeats < 1 or args.warmup < 0:
        ap.error(f"unknown model/variant {bad} (models: {', '.join(MODELS)}; variants: {', '.join(VARIANTS)})"
                 if bad else "--repeats must be >= 1 and --warmup >= 0")
    names = ["erm"] + [n for n in VARIANTS if n in names and n != "erm"]
    if any(VARIANTS[n][1] == 10 for n in names) and "erm-10" not in names:
        names.insert(1, "erm-10")  # the baseline of the multi-step units
    if "emlc-k5" in names and "erm-5" not in names:
        names.insert(1, "erm-5")
    kw = dict(batch_size=args.batch_size, meta_batch_size=args.meta_batch_size, device=args.device, seed=args.seed)

    if args.memory_child is not None:
        print(json.dumps(memory_child(models[0], args.memory_child, warmup=args.warmup, amp=args.amp, **kw)))
        return

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"meta_speed: torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"load average before {_fmt(load[0], '.2f') if load else 'n/a'}")
    report: dict[str, Any] = {"torch": torch.__version__, "threads": args.threads, "device": args.device,
                              "batch_size": args.batch_size, "meta_batch_size": args.meta_batch_size,
                              "repeats": args.repeats, "warmup": args.warmup, "load_average_before": load,
                              "anchor": ANCHOR, "models": {}}
    for model in models:
        res = time_model(model, names, repeats=args.repeats, warmup=args.warmup, amp=args.amp, **kw)
        erm = res["erm"]["ms"]
        for n, r in res.items():
            r["ratio"] = r["ms"] / _erm_baseline(res, n)
        for n in names:
            res[n]["peak_mib"] = None
            if not args.no_memory:
                mem = measure_memory(model, n, args)
                res[n]["peak_mib"] = mem.get("peak_mib")
                res[n]["memory"] = mem
        targets = evaluate_targets(res)
        print_table(model, res, targets, args)
        jvp = time_jvp_alone(model, batch_size=args.batch_size, device=args.device, seed=args.seed,
                             repeats=args.repeats, warmup=args.warmup)
        print(f"JVP pass alone (training batch, all parameters): graph walk {jvp['graph']:.1f} ms "
              f"({jvp['graph'] / erm:.2f}× ERM step), torch.func.jvp {jvp['func']:.1f} ms "
              f"({jvp['func'] / erm:.2f}× ERM step); torch.func / graph {jvp['func'] / jvp['graph']:.2f}×")
        report["models"][model] = {"variants": res, "targets": targets, "jvp_alone_ms": jvp}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
