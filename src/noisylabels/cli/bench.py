"""``noisylabels bench``."""

from __future__ import annotations

import argparse
import sys


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark suite (grid of runs) and print its table")
    p.add_argument("suite", nargs="?", help="suite name or YAML file (see --list)")
    p.add_argument("--out", help="output directory (default bench/<suite>)")
    p.add_argument("--workers", type=int, default=None, help="parallel worker processes (default: cores)")
    p.add_argument("--seeds", type=int, default=None, help="use only the first N seeds of the suite")
    p.add_argument("--executor", choices=["local", "ray", "inline"], default="local",
                   help="local worker processes (default), Ray tasks, or one run after another in this process")
    p.add_argument("--runs-per-gpu", type=int, default=None, metavar="N",
                   help="local: N workers per visible GPU, each group pinned with CUDA_VISIBLE_DEVICES")
    p.add_argument("--address", default=None, help="ray: cluster address (default: $RAY_ADDRESS or a local Ray)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="G",
                   help="ray: GPUs per run; a fraction shares a GPU between runs, an integer N > 1 trains each run "
                        "data-parallel on N GPUs of one node (as train --nproc N)")
    p.add_argument("--cpus-per-run", type=float, default=None, metavar="C",
                   help="ray: CPUs per run (default 1, or one per process of a data-parallel run)")
    p.add_argument("--nproc-per-run", type=int, default=None, metavar="N",
                   help="ray: processes per run, data-parallel (default: --gpus-per-run when an integer > 1, else 1; "
                        "with --gpus-per-run 0 on CPUs, gloo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field in every cell")
    p.add_argument("--row", action="append", default=None, metavar="LABEL", dest="rows",
                   help="run and tabulate only this row of the suite (repeat for several; e.g. --row C2D); "
                        "its runs keep their folders, so a later full run reuses them")
    p.add_argument("--list", action="store_true", help="list the shipped suites and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="resolve and check every run's config, print the plan and exit (nothing is trained)")



def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import list_suites, run_suite

    if args.list or not args.suite:
        for name in list_suites():
            print(name)
        return 0
    from ..bench.pool import BenchInterrupted

    try:
        res = run_suite(args.suite, out=args.out, workers=args.workers, max_seeds=args.seeds,
                        assignments=args.set, executor=args.executor, runs_per_gpu=args.runs_per_gpu,
                        address=args.address, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                        nproc_per_run=args.nproc_per_run, dry_run=args.dry_run, rows=args.rows)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, BenchInterrupted) else 2
        print(f"noisylabels: bench interrupted ({'SIGTERM' if signum == 15 else 'Ctrl-C'}); queued runs "
              "cancelled, finished runs kept: rerun the same command to continue", file=sys.stderr)
        return 128 + signum
    return 1 if res["failed"] else 0


