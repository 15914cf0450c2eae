"""Every check a resumed run passes, and the one list of settings a resume may change."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import RESUME_FREE_KEYS, config_hash
from ..errors import UserError
from ..methods import METHODS
from .prepare import RunData

__all__ = ["RESUME_FREE_KEYS", "RESUME_FREE_DOTTED", "resume_hash", "data_fingerprint", "check_more_epochs",
           "check_checkpoint"]

#: the dotted keys a resumed run's config may differ in without a check; ``train.epochs``, the other
#: key of :data:`RESUME_FREE_KEYS`, may change only as :func:`check_more_epochs` allows
RESUME_FREE_DOTTED: tuple[str, ...] = tuple(".".join(k) for k in RESUME_FREE_KEYS if k != ("train", "epochs"))


def _kept_text(checkpoint: Path, epoch: int) -> str:
    """What a stopped run leaves: the checkpoint of the last finished epoch, or none yet."""
    if checkpoint.is_file():
        return (f"records and the checkpoint of the last finished epoch are kept in {checkpoint.parent} "
                f"(a lower optim.lr or train.clip_grad_norm may help)")
    why = "no epoch had finished" if epoch == 0 else "train.checkpoint is false"
    return (f"records are kept in {checkpoint.parent}, but there is no checkpoint ({why}); "
            f"a lower optim.lr or train.clip_grad_norm may help")


def data_fingerprint(data: RunData) -> str:
    """A 16-hex-digit BLAKE2b of a run's pool and test images (their bytes; for streamed data, their
    source paths in order), labels and paths (see :attr:`Run.data_fingerprint`)."""
    import hashlib

    import numpy as np

    h = hashlib.blake2b(digest_size=8)
    for t in (data.images, data.labels, data.clean_labels, data.test_images, data.test_labels):
        if not isinstance(t, torch.Tensor):  # streamed images (decoded per batch): their source files, in order
            h.update(f"{type(t).__name__}{len(t)}".encode())
            continue
        a = t.detach().cpu().contiguous()
        h.update(f"{a.dtype}{tuple(a.shape)}".encode())
        h.update(a.numpy().reshape(-1).view(np.uint8) if a.numel() else b"")
    for paths in (data.paths, data.test_paths):
        h.update("\0".join(paths).encode("utf-8", "surrogateescape") if paths is not None else b"-")
    return h.hexdigest()


def resume_hash(cfg: Mapping[str, Any]) -> str:
    """The config hash a checkpoint carries: every setting but bookkeeping, ``data.dir`` and
    ``train.epochs`` (:data:`noisylabels.config.RESUME_FREE_KEYS`)."""
    return config_hash(cfg, ignore=RESUME_FREE_KEYS)


def check_more_epochs(cfg: Mapping[str, Any], *, before: int, run: int) -> None:
    """Refuse (one line) a resumed run's ``train.epochs`` that differs from the ``before`` it was
    started with, unless it is more than the ``run`` epochs done and neither the learning-rate
    schedule (``cosine`` and ``linear-decay`` span the run) nor the method depends on the total number of epochs."""
    after = int(cfg["train"]["epochs"])
    name = str(cfg["method"]["name"])
    why = None
    if after < run:
        why = f"the run has already trained {run} epochs"
    elif str(cfg["optim"]["schedule"]) in ("cosine", "linear-decay"):
        why = (f"the {cfg['optim']['schedule']} schedule spans the run's epochs, so the learning rates already "
               f"used would change")
    elif METHODS.get(name).total_epochs_matter:
        why = f"method {name!r} plans its stages over the run's epochs"
    if why is not None:
        raise UserError(f"cannot resume with --epochs {after} (the run was started with {before}): {why}; "
                        f"start a new run with --overwrite or choose another --out")


def check_checkpoint(ckpt: Mapping[str, Any], cfg: Mapping[str, Any], *, path: Path, fingerprint: str,
                     epochs: int) -> None:
    """Refuse (one line) to resume ``cfg`` (of ``epochs`` epochs, on data of ``fingerprint``) from the
    checkpoint ``ckpt`` read from ``path`` when it was written under another config (:func:`resume_hash`),
    on other data (:func:`data_fingerprint`), by an older noisylabels, or for a number of epochs
    :func:`check_more_epochs` refuses."""
    p = path
    saved = ckpt.get("config_hash")
    if not isinstance(saved, str):
        raise UserError(f"cannot resume from {p}: it carries no config hash (written by an older noisylabels); "
                        f"start a new run with --overwrite")
    now = resume_hash(cfg)
    if saved != now:
        raise UserError(f"cannot resume from {p}: it belongs to another run (config hash {saved}, this run's "
                        f"config {now}); start a new run with --overwrite or choose another --out")
    saved_data = ckpt.get("data_fingerprint")
    if not isinstance(saved_data, str):
        raise UserError(f"cannot resume from {p}: it carries no data fingerprint (written by an older noisylabels), "
                        f"so nothing shows it was trained on these data; start a new run in another --out")
    if saved_data != fingerprint:
        raise UserError(f"cannot resume from {p}: it was trained on other data (images or labels differ from "
                        f"those of --data-dir {cfg['data']['dir']}); resume with the data it was trained on, "
                        f"or start a new run in another --out")
    before = int(ckpt.get("epochs", epochs))
    if before != epochs:
        check_more_epochs(cfg, before=before, run=int(ckpt["epoch"]) + 1)
