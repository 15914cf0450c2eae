"""Command-line interface: ``noisylabels train | pretrain | noise | narl-train | bench | detect | export | datasets | methods | models | losses | config``.

User errors (:class:`~noisylabels.errors.UserError`) print one line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import UserError
from .bench import _add_bench, cmd_bench
from .listing import _add_noise, cmd_config, cmd_list, cmd_noise
from .narl import _add_narl_train, cmd_narl_train
from .pretrain import _add_pretrain, cmd_pretrain
from .train import _add_train, cmd_train

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="noisylabels", description="Learning with noisy labels.")
    parser.add_argument("--version", action="version", version=f"noisylabels {__version__}")
    sub = parser.add_subparsers(dest="command")
    _add_train(sub)
    _add_pretrain(sub)
    _add_noise(sub)
    _add_narl_train(sub)
    _add_bench(sub)
    from .detect import add_parsers as _add_detect_parsers

    _add_detect_parsers(sub)  # detect, export
    for name, what in (("datasets", "datasets"), ("methods", "training methods"), ("models", "models"),
                       ("losses", "losses")):
        sub.add_parser(name, help=f"list the registered {what}")
    p = sub.add_parser("config", help="print the default run config as commented YAML (a --config file)")
    p.add_argument("--method", help="the config a run of this method resolves to: its preset loss, meta set and "
                                    "options at their defaults")
    return parser



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line (train --nproc relaunches it through torchrun)
    try:
        code = _run(parser, args)
        sys.stdout.flush()  # a reader gone away (`| head`) is found here, not at interpreter exit
        return code
    except UserError as exc:
        from ..train.launch import report_rank_error

        if not report_rank_error(str(exc)):  # a rank of `train --nproc`: its launcher prints the run's one line
            print(f"noisylabels: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader of our output left (`noisylabels bench ... | head`): stop quietly like other
        # command-line tools; whatever a command wrote to files before is kept
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for such a pipe
    except Exception:
        from ..train.launch import another_rank_failed

        if another_rank_failed():  # a rank of `train --nproc` whose partner failed first (that one is reported)
            return 1
        raise
    except KeyboardInterrupt:
        print("noisylabels: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point standard output at the null device, so that the interpreter's final flush of the
    unwritten rest does not print a second error."""
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "train":
        return cmd_train(args)
    if args.command == "pretrain":
        return cmd_pretrain(args)
    if args.command == "noise":
        return cmd_noise(args)
    if args.command == "narl-train":
        return cmd_narl_train(args)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command in ("detect", "export"):
        from . import detect as commands

        return commands.cmd_detect(args) if args.command == "detect" else commands.cmd_export(args)
    if args.command in ("datasets", "methods", "models", "losses"):
        return cmd_list(args.command)
    if args.command == "config":
        return cmd_config(args)
    parser.print_help()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
