"""Command-line interface: ``noisylabels train | noise | narl-train | bench | detect | export | datasets | methods | models | losses | config``.

User errors (:class:`~noisylabels.errors.UserError`) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["main", "build_parser"]

# flag -> dotted config key
TRAIN_FLAGS = {
    "dataset": "data.name", "data_dir": "data.dir", "noise": "noise.type", "noise_rate": "noise.rate",
    "meta_size": "data.meta_size", "meta_set": "data.meta_set", "method": "method.name", "loss": "loss.name",
    "model": "model.name", "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "optim.lr",
    "seed": "seed", "out": "out",
}


#: what each run flag sets, for its --help line (the default is read from the config's DEFAULTS)
_FLAG_HELP = {
    "dataset": "dataset (list: noisylabels datasets)", "data_dir": "folder holding the data",
    "noise": "simulated noise type (list: noisylabels noise --list)", "noise_rate": "fraction of corrupted labels",
    "meta_size": "meta-set size for meta methods", "meta_set": "meta-set labels: clean or noisy",
    "method": "training method (list: noisylabels methods)", "loss": "loss (list: noisylabels losses)",
    "model": "model (list: noisylabels models)", "epochs": "training epochs", "batch_size": "training batch size",
    "lr": "learning rate", "seed": "run seed (noise, splits, initialisation, batch order)",
    "out": "output directory",
}


def _flag_help(flag: str, *, defaults: dict[str, str] | None = None) -> str:
    from .config import DEFAULTS

    d: Any = DEFAULTS
    for part in TRAIN_FLAGS[flag].split("."):
        d = d[part]
    shown = (defaults or {}).get(flag, "null" if d is None else str(d))
    if flag == "data_dir":
        shown = "$NOISYLABELS_DATA_DIR, else ./data, else ../shared/data"
    return f"{_FLAG_HELP[flag]} (default {shown}; config key {TRAIN_FLAGS[flag]})".replace("%", "%%")


def _add_run_options(p: argparse.ArgumentParser, *, defaults: dict[str, str] | None = None) -> None:
    """The options that describe a run (shared by ``train`` and ``narl-train``); every help line
    names the default and the config key the flag sets."""
    p.add_argument("--config", help="YAML config file merged over the defaults (see `noisylabels config`)")
    types = {"noise_rate": float, "lr": float, "meta_size": int, "epochs": int, "batch_size": int, "seed": int}
    for flag in TRAIN_FLAGS:
        kw: dict[str, Any] = {"type": types[flag]} if flag in types else {}
        if flag == "meta_set":
            kw["choices"] = ["clean", "noisy"]
        p.add_argument(f"--{flag.replace('_', '-')}", help=_flag_help(flag, defaults=defaults), **kw)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any config field, e.g. --set loss.q=0.7 (repeatable; every field and its default: "
                        "noisylabels config)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (the saved config; "
                   "only more --epochs may be added, other differing settings are refused; default: a new run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines (default: a bar on a "
                   "terminal, one line per epoch elsewhere)")


_LISTS = ("names: noisylabels datasets | methods | models | losses, noisylabels noise --list; every config field "
          "with its default: noisylabels config [--method NAME]")


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


def _add_noise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("noise", help="simulate label noise on a dataset; print the transition matrix")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--noise", default="symmetric")
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="noise option, e.g. --set include_true_class=true")
    p.add_argument("--csv", help="write the noisy labels to this CSV: for image-folder data the columns "
                                 "path,label,clean_label,index (data.options.labels_csv reads path,label); for data "
                                 "without image files (digits, MNIST, CIFAR pickles) the columns index,clean,noisy")
    p.add_argument("--list", action="store_true", help="list the noise types and exit")


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
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="G", help="ray: GPUs per run (fractions share)")
    p.add_argument("--cpus-per-run", type=float, default=None, metavar="C", help="ray: CPUs per run (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field in every cell")
    p.add_argument("--list", action="store_true", help="list the shipped suites and exit")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="noisylabels", description="Learning with noisy labels.")
    parser.add_argument("--version", action="version", version=f"noisylabels {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_train(sub)
    _add_noise(sub)
    _add_narl_train(sub)
    _add_bench(sub)
    from .detect.commands import add_parsers as _add_detect_parsers

    _add_detect_parsers(sub)  # detect, export
    for name, what in (("datasets", "datasets"), ("methods", "training methods"), ("models", "models"),
                       ("losses", "losses")):
        sub.add_parser(name, help=f"list the registered {what}")
    p = sub.add_parser("config", help="print the default run config as commented YAML (a --config file)")
    p.add_argument("--method", help="the config a run of this method resolves to: its preset loss, meta set and "
                                    "options at their defaults")
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    from .config import default_config
    from .config_doc import method_config, render_config

    if args.method:
        cfg, notes = method_config(args.method)
        head = f"# noisylabels train --config FILE: the resolved config of method {args.method}\n"
    else:
        cfg, notes = default_config(), {}
        head = "# noisylabels train --config FILE: every field at its default (a file may give any subset)\n"
    print(head + render_config(cfg, notes=notes), end="")
    return 0


def _print_table(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f}%" if pct else f"{v:.1f}"
    return str(v)


def _noise_text(run: dict[str, Any]) -> str:
    from .config import labels_from_user

    options = run["data"].get("options") or {}
    source = ""
    if options.get("labels_csv"):
        source = f"labels from {options['labels_csv']}, "
    elif labels_from_user(run):
        source = "its real noisy labels, "
    if str(run["noise"]["type"]).lower() == "none":
        return f"{source}no simulated noise"
    return f"{source}{run['noise']['type']} noise {run['noise']['rate']}" + (" simulated on top" if source else "")


def _header(cfg: dict[str, Any]) -> str:
    """One line naming what the run trains, with the settings the method resolved."""
    from .methods import METHODS
    from .train import resolve_method_defaults

    run = resolve_method_defaults(cfg)
    cls = METHODS.get(run["method"]["name"])
    text = (f"noisylabels {run['method']['name']} (loss {run['loss']['name']}, {run['model']['name']}) on "
            f"{run['data']['name']}, {_noise_text(run)}, seed {run['seed']}")
    if cls.needs_meta_set:
        why = f", the {run['method']['name']} preset's" if cls.meta_set_kind else ""
        kind = run["data"]["meta_set"]
        if (run["data"].get("options") or {}).get("trusted_csv"):
            kind = f"clean (trusted labels from {run['data']['options']['trusted_csv']})"
        text += f"; meta set: {kind}{why}"
    return text


#: settings a resumed run may take from the command line without changing its numbers
_RESUME_FREE = ("out", "train.progress", "train.num_threads", "data.cache_dir", "data.dir")


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
    from .config import load_config, parse_assignment, set_value, validate
    from .train.loop import check_more_epochs

    if not (out / "config.yaml").is_file():
        raise UserError(f"cannot resume: {out / 'config.yaml'} not found")
    saved = load_config(out / "config.yaml")
    new = saved
    flag_of = {key: flag for flag, key in TRAIN_FLAGS.items()}
    given: list[tuple[str, str]] = []  # (dotted key, how it was given)
    if args.config:  # the same file again is fine; what it changes is checked like the flags
        from .config import merge, read_yaml_mapping

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
                    if k not in _RESUME_FREE and before.get(k) != after.get(k))
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


def _interrupted_message(cfg: dict[str, Any], exc: BaseException) -> str:
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
                f"with: noisylabels train --out {out} --resume")
    if done and not cfg["train"]["checkpoint"]:
        return (f"noisylabels: interrupted ({what}) after {done} of {total} epochs; records kept in {out}, but "
                f"train.checkpoint=false left no checkpoint: the run cannot be resumed")
    if out.is_dir() and any(not p.name.startswith(".noisylabels-run") for p in out.iterdir()):  # not just our marker
        return (f"noisylabels: interrupted ({what}) before the first epoch finished: nothing to resume; "
                f"start again with --overwrite")
    return f"noisylabels: interrupted ({what}) before the run started (while loading data): nothing was written"


def cmd_train(args: argparse.Namespace) -> int:
    import signal
    import threading

    from .config import resolve_config
    from .methods import METHODS
    from .train import fit
    from .train.loop import check_names
    from .train.rundir import check_run_dir

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
    if args.folds is not None:
        from .config import load_config
        from .detect.commands import cmd_crossfit

        out = Path(cfg["out"])
        try:  # the same cross-fit again reuses its finished folds; anything else is a new run
            same = (out / "config.yaml").is_file() and load_config(out / "config.yaml") == run
        except UserError:
            same = False
        if not args.resume:  # refusals before any data are loaded (the run is replaced only once its data are read)
            check_run_dir(out, resume=same, overwrite=args.overwrite)
        return cmd_crossfit(cfg, args)
    check_run_dir(cfg["out"], resume=args.resume, overwrite=args.overwrite)  # refusals only: nothing is removed yet
    print(_header(cfg), flush=True)
    print(f"loading data ({run['data']['name']}) ...", flush=True)
    progress = not args.quiet  # a bar on a terminal, one line per epoch elsewhere
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        summary = fit(cfg, resume=args.resume, overwrite=args.overwrite, progress=progress)
    except KeyboardInterrupt as exc:
        print(_interrupted_message(cfg, exc), file=sys.stderr)
        return 128 + (15 if isinstance(exc, _Terminated) else 2)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)
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
    seconds = f"{summary['seconds']:.1f}"
    if summary.get("seconds_total") is not None and abs(summary["seconds_total"] - summary["seconds"]) > 0.05:
        seconds += f" (this process; {summary['seconds_total']:.1f} in all)"
    rows += [("seconds", seconds), ("records", str(cfg["out"]))]
    return rows


def cmd_narl_train(args: argparse.Namespace) -> int:
    from .config import resolve_config
    from .train.transfer import default_tasks, meta_train_adjuster

    overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    overrides.setdefault("method.name", "narl")
    overrides.setdefault("out", "runs/narl-train")
    cfg = resolve_config(config_file=args.config, overrides=overrides, assignments=args.set)
    cfg["train"]["progress"] = not args.quiet  # one line per epoch for all tasks (bars would interleave)
    from .train.loop import check_names

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


def cmd_noise(args: argparse.Namespace) -> int:
    import numpy as np

    from .config import parse_assignment
    from .data import create_dataset
    from .noise import apply_noise, format_matrix, list_noise_types, write_noisy_labels_csv

    if args.list:
        for name in list_noise_types():
            print(name)
        return 0
    options = dict(parse_assignment(s) for s in args.set)
    from .noise import NOISE
    from .train.precheck import check_option_names

    check_option_names("noise type", args.noise, NOISE.get(args.noise), options)  # before the data load
    raw = create_dataset(args.dataset, data_dir=args.data_dir)
    y = raw.y_train.astype(np.int64)
    features = raw.x_train.reshape(len(y), -1).astype(np.float32) / 255.0 if args.noise == "instance" else None
    res = apply_noise(args.noise, y, num_classes=len(raw.classes), rate=args.rate, seed=args.seed,
                      features=features, **options)
    print(f"{args.noise} noise, rate {args.rate}, seed {args.seed} on {args.dataset} ({len(y)} training labels)")
    print("transition matrix T[i, j] = P(noisy = j | clean = i):")
    print(format_matrix(res.transition, raw.classes))
    print(f"realised noise rate: {res.realized_rate:.4f}")
    if args.csv:
        if raw.paths_train is not None:  # file-backed data: the path,label file data.options.labels_csv reads
            from .noise.io import write_labels_csv

            write_labels_csv(args.csv, paths=raw.paths_train, labels=res.noisy_labels, classes=raw.classes, clean=y)
            print(f"wrote {args.csv} (path,label,clean_label,index: use it with --set data.options.labels_csv={args.csv} --noise none)")
        else:
            write_noisy_labels_csv(args.csv, index=np.arange(len(y)), clean=y, noisy=res.noisy_labels)
            print(f"wrote {args.csv} (index,clean,noisy: {args.dataset} has no image files, so no path,label file)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import list_suites, run_suite

    if args.list or not args.suite:
        for name in list_suites():
            print(name)
        return 0
    from .bench.pool import BenchInterrupted

    try:
        res = run_suite(args.suite, out=args.out, workers=args.workers, max_seeds=args.seeds,
                        assignments=args.set, executor=args.executor, runs_per_gpu=args.runs_per_gpu,
                        address=args.address, gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, BenchInterrupted) else 2
        print(f"noisylabels: bench interrupted ({'SIGTERM' if signum == 15 else 'Ctrl-C'}); queued runs "
              "cancelled, finished runs kept: rerun the same command to continue", file=sys.stderr)
        return 128 + signum
    return 1 if res["failed"] else 0


def cmd_list(command: str) -> int:
    if command == "datasets":
        from .data import DATASETS as reg
    elif command == "methods":
        from .methods import METHODS as reg
    elif command == "models":
        from .models import MODELS as reg
    else:
        from .losses import LOSSES as reg
    for name in reg.names():
        desc = reg.describe(name)
        print(f"{name:<22} {desc}" if desc else name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "noise":
            return cmd_noise(args)
        if args.command == "narl-train":
            return cmd_narl_train(args)
        if args.command == "bench":
            return cmd_bench(args)
        if args.command in ("detect", "export"):
            from .detect import commands

            return commands.cmd_detect(args) if args.command == "detect" else commands.cmd_export(args)
        if args.command in ("datasets", "methods", "models", "losses"):
            return cmd_list(args.command)
        if args.command == "config":
            return cmd_config(args)
        parser.print_help()
        return 0
    except UserError as exc:
        print(f"noisylabels: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("noisylabels: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
