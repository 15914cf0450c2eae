"""``noisylabels pretrain``: self-supervised pretraining of a backbone (``--method simclr``).

The run is an ordinary run of the one training loop (``train.fit``: progress, ``--resume`` with the
same numbers, the run-directory rules of ``train``) with :data:`noisylabels.config.PRETRAIN_DEFAULTS`
under the given flags; it writes ``OUT/backbone.pt``, the model without its classifier, which
``--set model.init_checkpoint=OUT/backbone.pt`` (any method) and EMLC's ``method.teacher_init`` load.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import _LISTS, TRAIN_FLAGS, _add_run_options, _fmt, _print_table
from .train import seconds_row

__all__ = ["cmd_pretrain"]


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    from ..config import PRETRAIN_DEFAULTS

    p = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone (SimCLR) for model.init_checkpoint",
                       description="Pretrain a backbone without labels and write OUT/backbone.pt (the model without "
                                   "its classifier). Labels, where the data have them, only feed the kNN monitor.",
                       epilog=_LISTS)
    _add_run_options(p, defaults={"method": PRETRAIN_DEFAULTS["method"]["name"], "out": PRETRAIN_DEFAULTS["out"],
                                  "noise": "none", "noise_rate": "0.0", "lr": str(PRETRAIN_DEFAULTS["optim"]["lr"]),
                                  "batch_size": str(PRETRAIN_DEFAULTS["train"]["batch_size"])})
    p.add_argument("--overwrite", action="store_true",
                   help="a new run into an --out that holds an earlier run clears it first (default: refused)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel on this machine: start N processes through torchrun; --batch-size is the "
                        "global batch (NT-Xent's negatives are all of it), divisible by N (default: one process)")
    p.add_argument("--allow-other-world-size", action="store_true",
                   help="--resume a run written by another number of processes (default: refused)")


def cmd_pretrain(args: argparse.Namespace) -> int:
    import os

    from ..config import PRETRAIN_DEFAULTS, resolve_config
    from ..methods import METHODS, list_methods
    from ..train.build import check_names
    from ..train.rundir import check_run_dir
    from .train import _launch_torchrun, _resume_config, run_fit

    launch = getattr(args, "nproc", None) is not None and "WORLD_SIZE" not in os.environ
    if launch and args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    main_rank = os.environ.get("RANK", "0") == "0"
    if args.resume and args.overwrite:
        raise UserError("give --resume or --overwrite, not both")
    if args.resume:
        cfg = _resume_config(args, Path(args.out or PRETRAIN_DEFAULTS["out"]))
    else:
        overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
        cfg = resolve_config(config_file=args.config, overrides=overrides, assignments=args.set, base=PRETRAIN_DEFAULTS)
    name = str(cfg["method"]["name"])
    cls = METHODS.get(name)
    if not cls.self_supervised:
        ssl = [m for m in list_methods() if METHODS.get(m).self_supervised]
        raise UserError(f"pretrain trains self-supervised methods ({', '.join(ssl)}); method {name!r} learns from "
                        f"labels: use noisylabels train")
    run = check_names(cfg)  # every name, option and file before any data are loaded
    if "strong" in run["data"]["views"] and str(run["data"].get("strong_augment")).strip().lower() in ("none", "false"):
        raise UserError(f"{name} contrasts two augmented views of each image: data.strong_augment none would make "
                        f"them identical (the default is simclr)")
    check_run_dir(cfg["out"], resume=args.resume, overwrite=args.overwrite)  # refusals only: nothing removed yet
    if launch and args.nproc > 1:  # the refusals above (and the batch's) before any process starts
        if int(run["train"]["batch_size"]) % args.nproc:
            raise UserError(f"--batch-size {run['train']['batch_size']} is the global batch and must be divisible by "
                            f"--nproc {args.nproc}")
        return _launch_torchrun(args)
    if not main_rank:
        summary = run_fit(cfg, args, command="pretrain", allow_other_world_size=args.allow_other_world_size)
        return summary if isinstance(summary, int) else 0
    print(f"noisylabels pretrain {name} ({run['model']['name']}) on {run['data']['name']}, views "
          f"{'/'.join(run['data']['views'])} ({_policy_text(run)}), seed {run['seed']}", flush=True)
    print(f"loading data ({run['data']['name']}) ...", flush=True)
    summary = run_fit(cfg, args, command="pretrain", allow_other_world_size=args.allow_other_world_size)
    if isinstance(summary, int):
        return summary
    _print_table(_result_rows(summary, cfg))
    return 0


def _policy_text(run: dict[str, Any]) -> str:
    s = run["data"].get("strong_augment")
    if isinstance(s, dict):
        opts = ", ".join(f"{k}={v}" for k, v in s.items() if k != "name")
        return f"{s.get('name', 'randaugment+cutout')}" + (f" {opts}" if opts else "")
    return str(s)


def _result_rows(summary: dict[str, Any], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if summary.get("test_accuracy") is not None or summary.get("best_val_accuracy") is not None:
        rows += [("kNN test accuracy (last epoch)", _fmt(summary.get("test_accuracy"))),
                 ("kNN val accuracy (last epoch)", _fmt(summary.get("best_val_accuracy")))]
    else:
        rows.append(("kNN monitor", "none (no labels, or method.knn_k=0)"))
    rows.append(("train / val / test samples", f"{summary['num_train']} / {summary['num_val']} / {summary['num_test']}"))
    rows.append(seconds_row(summary))
    if summary.get("backbone"):
        rows += [("backbone", f"{summary['backbone']} (last epoch; use: --set model.init_checkpoint="
                              f"{summary['backbone']})")]
    rows.append(("records", str(cfg["out"])))
    return rows
