"""A rank of ``noisylabels train --nproc 2`` whose rank 1 finds a bad input during training while rank 0
waits for it in an all-reduce (``python -m tests.train._rank_fails``, started by ``train.launch.launch``)."""

from __future__ import annotations

import sys

import noisylabels.cli as cli


def _train(args):
    import torch
    import torch.distributed as dist

    from noisylabels.errors import UserError

    dist.init_process_group("gloo")
    if dist.get_rank() == 1:
        raise UserError("rank 1 found a bad input")
    dist.all_reduce(torch.zeros(1))  # fails or is stopped once rank 1 has left: a consequence
    return 0


if __name__ == "__main__":
    cli.cmd_train = _train  # the CLI's error handling around a training step that fails on one rank
    sys.exit(cli.main(["train"]))
