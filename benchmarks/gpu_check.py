"""One prepared run on one GPU (at most 8 minutes): the checks of the CUDA code paths a CPU cannot make.

1. **Equality tests on CUDA**: ``tests/meta/test_graph_jvp_backends.py`` (its device-parametrized tests
   run on ``cuda`` when it is available: every registered model's recorded forward, including
   ``CudnnBatchNormBackward0`` and ``NativeDropoutBackward0``, walked without fallback and equal to
   ``torch.func.jvp``; the engine's meta-gradient equal to the double-backward reference), then
   ``tests/meta/test_graph_jvp.py`` and ``tests/meta/test_engine.py``.
2. **meta_speed** (``benchmarks/meta_speed.py``'s timing, same variants) for ResNet-32 and
   WRN-28-10 at batch 100, with bf16 autocast off and on (``torch.autocast`` around the steps:
   what exists before the engine gets its own ``amp`` option), and the JVP path each took.
3. **Two epochs of each meta method** (``mwnet``, ``mnw-net``, ``rmnw-net``, ``l2rw``, ``l2b``)
   on CIFAR-10 from the shared JPEG zips (ResNet-32, 40% symmetric noise, batch 100): seconds,
   accuracy, and which JVP path the engine took (graph walk, or the ``torch.func`` fallback and
   the node that forced it).

Every phase has a share of ``--budget`` seconds (default 450) and is cut short, saying so, when
it runs out. ``--device cpu --quick`` runs the same code on small models and a CIFAR subset so
the script itself is checked without a GPU.

    python benchmarks/gpu_check.py                       # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --quick  # here
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from noisylabels.config import resolve_config  # noqa: E402
from noisylabels.meta import supports_graph  # noqa: E402

gj = importlib.import_module("noisylabels.meta.graph_jvp")

META_METHODS = [("mwnet", {}), ("mnw-net", {}), ("rmnw-net", {}), ("narl", {}),
                ("l2rw", {}), ("l2b", {})]
SPEED_VARIANTS = ["erm", "mwnet", "mwnet-jvp-func", "mwnet-delayed", "l2rw", "l2b", "narl", "double-backward"]


class Clock:
    def __init__(self, budget: float) -> None:
        self.t0, self.budget = time.monotonic(), float(budget)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:5.0f} s]"


def header(text: str, clock: Clock) -> None:
    print(f"\n{clock.stamp()} == {text}", flush=True)


def jvp_path(counts: dict[str, int]) -> str:
    if not counts:
        return "graph walk (every node had a rule)"
    return "torch.func.jvp fallback: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


# -- 1 ---------------------------------------------------------------------------------------------------
def phase_tests(args: argparse.Namespace, clock: Clock, limit: float) -> bool:
    files = ["tests/meta/test_graph_jvp_backends.py"]
    if not args.quick:
        files += ["tests/meta/test_graph_jvp.py", "tests/meta/test_engine.py"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "slow or not slow",
           "-W", "ignore::DeprecationWarning", *files]
    header(f"1. equality tests ({'CUDA available' if torch.cuda.is_available() else 'no CUDA: CPU only'}): "
           + " ".join(files), clock)
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(10.0, limit))
    except subprocess.TimeoutExpired:
        print(f"   tests cut short after {limit:.0f} s")
        return False
    lines = (res.stdout + res.stderr).strip().splitlines()
    for line in lines[-15:]:
        print("   " + line)
    return res.returncode == 0


# -- 2 ---------------------------------------------------------------------------------------------------
def phase_speed(args: argparse.Namespace, clock: Clock, limit: float) -> None:
    import meta_speed as ms

    models = ["resnet8", "lenet"] if args.quick else ["resnet32", "wrn28_10"]
    for m in models:
        ms.MODELS.setdefault(m, (3, 32))
    header(f"2. meta_speed at batch {args.batch_size} on {args.device}: {', '.join(models)}; bf16 autocast off / on", clock)
    end = clock.left() - limit
    for model in models:
        for amp in (False, True):
            if clock.left() - end < 5:
                print(f"   {model} amp={amp}: skipped (phase budget spent)")
                continue
            ctx = (torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
                   if amp else contextlib.nullcontext())
            gj.fallback_counts(reset=True)
            t0 = time.monotonic()
            try:
                with ctx, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = ms.time_model(model, SPEED_VARIANTS, batch_size=args.batch_size,
                                        meta_batch_size=args.batch_size, device=args.device, seed=0,
                                        repeats=2 if args.quick else 5, warmup=1 if args.quick else 2)
            except Exception as exc:  # noqa: BLE001  (report and go on: the other checks still run)
                print(f"   {model} bf16={'on' if amp else 'off'}: FAILED {type(exc).__name__}: {str(exc).splitlines()[0]}")
                continue
            erm = res["erm"]["ms"]
            cells = ", ".join(f"{n} {r['ms']:.1f} ms ({r['ms'] / erm:.2f}x)" for n, r in res.items())
            print(f"   {model} bf16 {'on ' if amp else 'off'} ({time.monotonic() - t0:.0f} s): {cells}")
            print(f"      JVP path: {jvp_path(gj.fallback_counts(reset=True))}")


# -- 3 ---------------------------------------------------------------------------------------------------
def _data_dir(given: str | None) -> str | None:
    cands = [given] if given else [str(ROOT / "shared" / "data"), str(ROOT.parent / "shared" / "data"),
                                   "/work/shared/data"]
    for c in cands:
        if c and (Path(c) / "cifar10-train-jpeg.zip").is_file():
            return c
    return given


def phase_methods(args: argparse.Namespace, clock: Clock, limit: float) -> None:
    from noisylabels.train import build_context, fit

    data_dir = _data_dir(args.data_dir)
    model = "resnet8" if args.quick else "resnet32"
    sub = {"data.train_subset": 600, "data.test_subset": 200, "data.meta_size": 100} if args.quick else {}
    header(f"3. two epochs of each meta method on CIFAR-10 ({data_dir}), {model}, batch {args.batch_size}", clock)
    end = clock.left() - limit
    last = None
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as out:
        for name, extra in META_METHODS:
            if last is not None and clock.left() - end < last * 1.2:
                print(f"   {name}: skipped (about {last:.0f} s needed, {max(0, clock.left() - end):.0f} s left)")
                continue
            cfg = resolve_config(overrides={
                "device": args.device, "data.name": "cifar10", "data.dir": data_dir, "model.name": model,
                "method.name": name, "noise.type": "symmetric", "noise.rate": 0.4, "train.epochs": 2,
                "train.batch_size": args.batch_size, "optim.lr": 0.1, "train.progress": False,
                "out": os.path.join(out, name), **sub, **extra})
            gj.fallback_counts(reset=True)
            t0 = time.monotonic()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    summary = fit(cfg)
                last = time.monotonic() - t0
                ours = {str(w.message).split("(")[1].split(")")[0] for w in caught if "graph JVP" in str(w.message)}
                print(f"   {name}: {last:.0f} s, test acc {100 * summary['test_accuracy']:.2f}%, "
                      f"AUROC {float('nan') if summary.get('detection_auroc') is None else summary['detection_auroc']:.3f}, "
                      f"JVP path: {jvp_path(gj.fallback_counts(reset=True))}"
                      + (f" (warned: {'; '.join(sorted(ours))})" if ours else ""), flush=True)
            except Exception as exc:  # noqa: BLE001
                last = time.monotonic() - t0
                print(f"   {name}: FAILED after {last:.0f} s: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                traceback.print_exc(limit=3)
        # the nodes of the model's own training forward on this device
        ctx = build_context(resolve_config(overrides={"device": args.device, "data.name": "cifar10",
                                                      "data.dir": data_dir, "model.name": "wrn",
                                                      "model.dropout": 0.3, "model.depth": 10,
                                                      "out": os.path.join(out, "probe"), **sub}))
        x = torch.randn(8, 3, 32, 32, device=args.device)
        z = ctx.model.train()(x)
        names = sorted({type(n).__name__ for n in gj._forward_order(z.grad_fn)})
        print(f"   nodes of a WRN (dropout) training forward on {args.device}: {', '.join(names)}; "
              f"every node has a rule: {supports_graph(z)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small models and a CIFAR subset (a CPU check of the script)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-dir", default=None, help="folder with cifar10-train-jpeg.zip / cifar10-test-jpeg.zip")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available (use --device cpu --quick)")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = Clock(args.budget)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"gpu_check: torch {torch.__version__}, device {args.device} ({dev}), cudnn "
          f"{torch.backends.cudnn.version() if torch.cuda.is_available() else '-'}, budget {args.budget:.0f} s"
          f"{', quick' if args.quick else ''}", flush=True)
    shares = (0.30, 0.30, 0.40)
    ok = phase_tests(args, clock, shares[0] * clock.left())
    phase_speed(args, clock, shares[1] / (shares[1] + shares[2]) * clock.left())
    phase_methods(args, clock, max(30.0, clock.left() - 5))
    print(f"\n{clock.stamp()} done; equality tests {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
