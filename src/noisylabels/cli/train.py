"""``noisylabels train`` (with ``--resume`` and ``--folds``)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import TRAIN_FLAGS, _LISTS, _add_run_options, _fmt, _header, _print_table


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one run (no arguments: digits, 40%% symmetric noise, CE, MLP)",
                       description="Train one run and write its records to --out.", epilog=_LISTS)
    _add_run_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="a new run into an --out that holds an earlier run clears it first (default: refused)")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="cross-fit: train K models on K-1 folds of the training split each and write "
                        "out-of-sample pred_probs.npy, label_issues.csv and the count of wrong labels "
                        "(default: one model, no cross-fit)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="data-parallel on this machine: start N processes through torchrun (python -m "
                        "torch.distributed.run); --batch-size is the global batch, divisible by N (default: one process)")
    p.add_argument("--allow-other-world-size", action="store_true",
                   help="--resume a run written by another number of processes (same global batches; other "
                        "random draws inside the steps; default: refused)")



def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or (prefix and not d and prefix.endswith("options")):
        return {prefix: d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _resume_config(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The saved config of the run in ``out``, with the flags given now applied when they are
    safe (more epochs) and refused, naming them, when they would change the run."""
    from ..config import load_config, parse_assignment, set_value, validate
    from ..train.resume import RESUME_FREE_DOTTED, check_more_epochs

    if not (out / "config.yaml").is_file():
        raise UserError(f"cannot resume: {out / 'config.yaml'} not found")
    saved = load_config(out / "config.yaml")
    new = saved
    flag_of = {key: flag for flag, key in TRAIN_FLAGS.items()}
    given: list[tuple[str, str]] = []  # (dotted key, how it was given)
    if args.config:  # the same file again is fine; what it changes is checked like the flags
        from ..config import merge, read_yaml_mapping

        load_config(args.config)  # one-line errors for a missing or invalid file
        data = read_yaml_mapping(args.config)
        new = merge(new, data)
        given += [(k, f"{k}={v} in --config {args.config}") for k, v in _flatten(data).items()]
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None and key != "out":
            new = set_value(new, key, value)
            given.append((key, f"--{flag.replace('_', '-')} {value}"))
    for text in args.set:
        key, value = parse_assignment(text)
        new = set_value(new, key, value)
        given.append((key, f"--set {text}"))
    before, after = _flatten(saved), _flatten(new)
    differ = sorted(k for k in set(before) | set(after)
                    if k not in RESUME_FREE_DOTTED and before.get(k) != after.get(k))
    if differ == ["train.epochs"]:
        check_more_epochs(new, before=int(saved["train"]["epochs"]), run=0)
    elif differ:
        how = {k: h for k, h in given}
        named = []
        for k in differ:
            what = how.get(k) or next((h for g, h in given if k.startswith(g + ".")), None) \
                or (f"--{flag_of[k].replace('_', '-')}" if k in flag_of else f"--set {k}")
            named.append(f"{what} (saved: {before.get(k, '-')})")
        raise UserError(f"cannot resume with settings that differ from the saved run ({out / 'config.yaml'}): "
                        f"{'; '.join(named)}; a resumed run keeps its config (only more --epochs can be added): "
                        f"start a new run with --overwrite or choose another --out")
    new["out"] = str(out)  # a run writes only where --out points (a copied run directory too)
    validate(new)
    return new


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the run stops the same clean way."""

    signum = 15


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _interrupted_message(cfg: dict[str, Any], exc: BaseException, *, command: str = "train") -> str:
    import json

    out = Path(cfg["out"])
    what = "SIGTERM" if isinstance(exc, _Terminated) else "Ctrl-C"
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    done = int(summary.get("epochs_run") or 0)
    total = int(cfg["train"]["epochs"])
    if (out / "checkpoint.pt").is_file():
        return (f"noisylabels: interrupted ({what}) after {done} of {total} epochs; records kept in {out}; continue "
                f"with: noisylabels {command} --out {out} --resume")
    if done and not cfg["train"]["checkpoint"]:
        return (f"noisylabels: interrupted ({what}) after {done} of {total} epochs; records kept in {out}, but "
                f"train.checkpoint=false left no checkpoint: the run cannot be resumed")
    if out.is_dir() and any(not p.name.startswith(".noisylabels-run") for p in out.iterdir()):  # not just our marker
        return (f"noisylabels: interrupted ({what}) before the first epoch finished: nothing to resume; "
                f"start again with --overwrite")
    return f"noisylabels: interrupted ({what}) before the run started (while loading data): nothing was written"


def _launch_torchrun(args: argparse.Namespace) -> int:
    """``noisylabels train --nproc N ...`` = ``python -m torch.distributed.run --standalone
    --nproc-per-node N -m noisylabels train ...`` (the same arguments without ``--nproc``; also
    ``pretrain``), with
    torchrun's agent in this process (:func:`noisylabels.train.launch.launch`): a rank's error is
    one line (``noisylabels: error: ...``, exit 2), not torchrun's traceback."""
    from ..train.launch import launch

    argv, skip = [], False
    for a in args.argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        argv.append(a)
    res = launch(["noisylabels", *argv], nproc=args.nproc)
    if res.error:
        print(f"noisylabels: error: {res.error}", file=sys.stderr)
    return res.returncode


def cmd_train(args: argparse.Namespace) -> int:

    launch = getattr(args, "nproc", None) is not None and "WORLD_SIZE" not in os.environ
    if launch and args.nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {args.nproc}")
    main_rank = os.environ.get("RANK", "0") == "0"

    from ..config import resolve_config
    from ..methods import METHODS
    from ..train.build import check_names
    from ..train.rundir import check_run_dir

    if args.resume and args.overwrite:
        raise UserError("give --resume or --overwrite, not both")
    if args.resume:
        cfg = _resume_config(args, Path(args.out or "runs/latest"))
    else:
        overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
        cfg = resolve_config(config_file=args.config, overrides=overrides, assignments=args.set)
        meta = cfg["data"]["meta_size"]
        if meta not in ("auto", 0) and not METHODS.get(str(cfg["method"]["name"])).needs_meta_set:
            raise UserError(f"--meta-size {meta}: method {cfg['method']['name']!r} uses no meta set, so it would "
                            f"only take {meta} samples away from training; leave data.meta_size at auto")
    run = check_names(cfg)  # every name and the device, before any data are loaded
    if METHODS.get(str(run["method"]["name"])).self_supervised:
        raise UserError(f"method {run['method']['name']!r} is self-supervised pretraining and trains no classifier: "
                        f"use noisylabels pretrain --method {run['method']['name']} (it writes OUT/backbone.pt for "
                        f"--set model.init_checkpoint=...)")
    if args.folds is not None and (os.environ.get("WORLD_SIZE", "1") != "1" or (launch and args.nproc > 1)):
        raise UserError("--folds on several processes (--nproc, torchrun) is not supported: cross-fit folds run one "
                        "after another in one process")
    if args.folds is not None:
        from ..config import load_config
        from .detect import cmd_crossfit

        out = Path(cfg["out"])
        try:  # the same cross-fit again reuses its finished folds; anything else is a new run
            same = (out / "config.yaml").is_file() and load_config(out / "config.yaml") == run
        except UserError:
            same = False
        if not args.resume:  # refusals before any data are loaded (the run is replaced only once its data are read)
            check_run_dir(out, resume=same, overwrite=args.overwrite)
        return cmd_crossfit(cfg, args)
    check_run_dir(cfg["out"], resume=args.resume, overwrite=args.overwrite)  # refusals only: nothing is removed yet
    if launch and args.nproc > 1:  # the refusals above (and the batch's) before any process starts
        if int(run["train"]["batch_size"]) % args.nproc:
            raise UserError(f"--batch-size {run['train']['batch_size']} is the global batch and must be divisible by "
                            f"--nproc {args.nproc}")
        return _launch_torchrun(args)
    if main_rank:
        print(_header(cfg), flush=True)
        print(f"loading data ({run['data']['name']}) ...", flush=True)
    from ..detect import resolve_forget_rate  # method.forget_rate=estimate: a cross-fitted warm-up first

    summary = run_fit(cfg, args, command="train", resolve=resolve_forget_rate,
                      allow_other_world_size=args.allow_other_world_size)
    if isinstance(summary, int):
        return summary
    if main_rank:
        _print_table(_result_rows(summary, cfg))
    return 0


def _result_rows(summary: dict[str, Any], cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """What the run measured; without ground truth only what is known."""
    truth = summary.get("ground_truth", True)
    test_name = "test accuracy" if truth else "test accuracy (on your labels)"
    rows = [
        (f"{test_name} @ best val", _fmt(summary["test_accuracy"])),
        ("best val accuracy (noisy)", f"{_fmt(summary['best_val_accuracy'])} (epoch {summary['best_epoch']})"),
        (f"last-epoch {test_name}", _fmt(summary["last_test_accuracy"])),
    ]
    if truth:
        rows.append(("realised noise rate", _fmt(summary["realized_noise_rate"])))
        if summary.get("detection_auroc") is not None and math.isfinite(summary["detection_auroc"]):
            rows.append(("noisy-label detection AUROC", f"{summary['detection_auroc']:.3f}"))
    rows.append(("train / val / test samples", f"{summary['num_train']} / {summary['num_val']} / {summary['num_test']}"))
    if not truth and summary.get("test_carved"):
        rows.append(("note", "no ground truth: the test split was carved from your (noisy) labels; "
                             "noise rate and detection AUROC unknown"))
    elif not truth:
        rows.append(("note", "no ground truth for the training labels: noise rate and detection AUROC unknown"))
    rows += [seconds_row(summary), ("records", str(cfg["out"]))]
    return rows


def run_fit(cfg: dict[str, Any], args: argparse.Namespace, *, command: str, **fit_options: Any) -> dict[str, Any] | int:
    """``fit`` as a command runs it: SIGTERM stops it like Ctrl-C (the last checkpoint is kept), and an
    interruption prints how to resume and returns the exit status (128 + signal) instead of a summary."""
    from ..train import fit

    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:  # progress: a bar on a terminal, one line per epoch elsewhere
        return fit(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, **fit_options)
    except KeyboardInterrupt as exc:
        from ..train.launch import another_rank_failed, launched_rank

        # under `--nproc` rank 0 speaks for the run, and nobody when torchrun stopped it after another rank's error
        if not (launched_rank() and (os.environ.get("RANK", "0") != "0" or another_rank_failed())):
            print(_interrupted_message(cfg, exc, command=command), file=sys.stderr)
        return 128 + (15 if isinstance(exc, _Terminated) else 2)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


def seconds_row(summary: dict[str, Any]) -> tuple[str, str]:
    """The result table's seconds: this process's, and the total over resumed processes when it differs."""
    seconds = f"{summary['seconds']:.1f}"
    if summary.get("seconds_total") is not None and abs(summary["seconds_total"] - summary["seconds"]) > 0.05:
        seconds += f" (this process; {summary['seconds_total']:.1f} in all)"
    return "seconds", seconds


