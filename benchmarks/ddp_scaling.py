"""Data-parallel throughput: training images/s of one run on 1 process vs N processes (torchrun).

Each cell is a real run's training steps (:meth:`noisylabels.train.loop.Run.steps`: the global batch
drawn and augmented, each rank's slice, forward, backward, the gradient all-reduce, the step) on a
CIFAR-10 subset, timed after ``--warmup`` steps between two barriers; evaluation, checkpoints and
data loading are not timed. CPU (default): 1 process x ``--threads`` threads against ``--threads``
processes x 1 thread (the issue-24 target: ERM on ResNet-32 at batch 256, >= 0.9x). CUDA
(``--device cuda``): 1, 2, 4, ... GPUs, one process each. MW-Net runs on a model without BatchNorm
(``--meta-model``, default ``lenet``): a data-parallel meta method on a BatchNorm model needs
``train.sync_batchnorm``, whose all-reduces per layer this benchmark does not time.

    nice -n 15 python3 benchmarks/ddp_scaling.py                       # CPU: 1x2 vs 2x1, erm + mwnet
    python3 benchmarks/ddp_scaling.py --device cuda                    # 1..all GPUs
    python3 benchmarks/ddp_scaling.py --methods erm --steps 8 --warmup 2

Prints one line per cell (images/s) and, per method, the ratio of each cell to the 1-process one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_data() -> str | None:
    for c in (ROOT / "shared" / "data", ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data",
              ROOT / ".gpu" / "data",
              Path(os.environ.get("NOISYLABELS_DATA_DIR", "/nonexistent"))):
        if (c / "cifar10-train-jpeg.zip").is_file():
            return str(c)
    return None


def worker(args: argparse.Namespace) -> None:
    """One cell (``--worker``): this process's part of the run; rank 0 prints a JSON line."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from noisylabels.config import resolve_config
    from noisylabels.train.build import check_device
    from noisylabels.train.distributed import init_distributed
    from noisylabels.train.loop import Run

    steps = args.warmup + args.steps
    model = args.model if args.method == "erm" else args.meta_model
    with tempfile.TemporaryDirectory() as out:
        over = {"data.name": "cifar10", "data.dir": args.data_dir, "noise.type": "symmetric", "noise.rate": 0.4,
                "data.train_subset": args.batch_size * steps + 200, "data.test_subset": 100, "model.name": model,
                "method.name": args.method, "train.batch_size": args.batch_size, "train.num_threads": args.threads,
                "train.progress": False, "train.checkpoint": False, "device": args.device, "out": out}
        if args.method != "erm":
            over["data.meta_size"] = 200
        cfg = resolve_config(overrides=over)
        dist = init_distributed(check_device(cfg["device"]))
        run = Run(cfg, dist=dist)
        it = run.steps(0)
        sync = (lambda: torch.cuda.synchronize()) if run.ctx.device.type == "cuda" else (lambda: None)

        def barrier() -> None:
            sync()
            if dist.active:
                import torch.distributed as td

                td.barrier()

        for _ in range(args.warmup):
            next(it)
        barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            next(it)
        barrier()
        seconds = time.perf_counter() - t0
        if dist.is_main:
            print("CELL " + json.dumps({"images_per_s": args.steps * args.batch_size / seconds,
                                        "seconds": seconds}), flush=True)
        dist.close()


def cell(args: argparse.Namespace, method: str, procs: int, threads: int) -> float:
    """Images/s of one cell, run in fresh processes (``procs`` > 1: torchrun)."""
    base = [str(Path(__file__).resolve()), "--worker", "--method", method, "--threads", str(threads),
            "--model", args.model, "--meta-model", args.meta_model, "--batch-size", str(args.batch_size),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
            "--data-dir", args.data_dir]
    cmd = [sys.executable, *base] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", *base]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("CELL ")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"cell {method} x{procs} failed ({res.returncode}): {res.stderr[-1500:]}")
    return float(json.loads(lines[-1][5:])["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="erm,mwnet")
    ap.add_argument("--model", default="resnet32", help="ERM's model (default resnet32)")
    ap.add_argument("--meta-model", default="lenet", help="MW-Net's model, without BatchNorm (default lenet)")
    ap.add_argument("--batch-size", type=int, default=256, help="the global batch (default 256)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per cell (default 6)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="CPU: the 1-process cell's threads = the processes of the other (2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--gpus", type=int, default=None, help="CUDA: up to this many GPUs (default all)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="erm", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.data_dir = args.data_dir or find_data()
    if args.data_dir is None:
        ap.error("no cifar10-train-jpeg.zip found: pass --data-dir")
    if args.worker:
        worker(args)
        return 0
    if args.device.startswith("cuda"):
        import torch

        n = min(args.gpus or torch.cuda.device_count(), torch.cuda.device_count())
        counts = sorted({1, *[k for k in (2, 4, 8) if k <= n], n})
        layouts = [(k, 1) for k in counts]
    else:
        layouts = [(1, args.threads), (args.threads, 1)]
    load = os.getloadavg()
    print(f"ddp_scaling: device {args.device}, global batch {args.batch_size}, {args.steps} timed steps after "
          f"{args.warmup}; ERM {args.model}, MW-Net {args.meta_model}; load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        rates = {}
        for procs, threads in layouts:
            rates[(procs, threads)] = r = cell(args, method, procs, threads)
            print(f"  {method:6} {procs} process(es) x {threads} thread(s): {r:8.1f} images/s", flush=True)
        base = rates[layouts[0]]
        ratios = ", ".join(f"{p}x{t}: {r / base:.2f}x" for (p, t), r in rates.items())
        print(f"  {method:6} ratio to {layouts[0][0]} process x {layouts[0][1]} thread(s): {ratios}", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
