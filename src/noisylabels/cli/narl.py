"""``noisylabels narl-train``: meta-train NARL's shared adjuster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .common import _LISTS, TRAIN_FLAGS, _add_run_options, _fmt


def _add_narl_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("narl-train", help="meta-train one NARL-Adjuster over several noise tasks, for --method t-narl",
                       epilog=_LISTS)
    _add_run_options(p, defaults={"method": "narl", "out": "runs/narl-train"})
    p.add_argument("--task", action="append", default=[], metavar="TYPE:RATE",
                   help="a task, e.g. symmetric:0.4 (repeatable; default: symmetric, the dataset's class map and "
                        "instance noise at 20/40/60%%, as the paper)")
    p.add_argument("--adjuster-out", help="the adjuster file to write (default OUT/adjuster.pt; an existing one is "
                                          "refused unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the narl-train run in --out (only its records) and an existing --adjuster-out (default: refuse both)")



def cmd_narl_train(args: argparse.Namespace) -> int:
    from ..config import resolve_config
    from ..train.transfer import default_tasks, meta_train_adjuster

    overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    overrides.setdefault("method.name", "narl")
    overrides.setdefault("out", "runs/narl-train")
    cfg = resolve_config(config_file=args.config, overrides=overrides, assignments=args.set)
    cfg["train"]["progress"] = not args.quiet  # one line per epoch for all tasks (bars would interleave)
    from ..train.build import check_names

    check_names(cfg)  # names, options and weight files before any data are loaded
    tasks = args.task or default_tasks(str(cfg["data"]["name"]))
    print(f"noisylabels narl-train: one {cfg['method'].get('loss', 'gce')} adjuster over {len(tasks)} tasks "
          f"({', '.join(tasks)}) on {cfg['data']['name']}, {cfg['train']['epochs']} epochs", flush=True)
    try:
        if args.resume and args.overwrite:
            raise UserError("give --resume or --overwrite, not both")
        res = meta_train_adjuster(cfg, tasks, out=cfg["out"], adjuster_out=args.adjuster_out, resume=args.resume,
                                  overwrite=args.overwrite)
    except KeyboardInterrupt:
        saved = any(Path(cfg["out"]).glob("task-*/checkpoint.pt"))
        print("noisylabels: narl-train interrupted; " + (f"records in {cfg['out']}: continue with the same command "
              "and --resume" if saved else "no epoch finished: nothing to resume"), file=sys.stderr)
        return 130
    for task, s in zip(tasks, res["summaries"]):
        print(f"  {task:<22} test accuracy @ best val {_fmt(s['test_accuracy'])}, last 5 epochs "
              f"{_fmt(s.get('last5_test_accuracy'))}")
    print(f"wrote {res['adjuster']} (snapshots after epochs {', '.join(map(str, res['snapshot_epochs']))}); "
          f"use it with --method t-narl --set method.adjuster={res['adjuster']}")
    return 0


