"""Assemble a run's data from the config: load, corrupt, split, and move to tensors.

The order is fixed so that a seed gives the same data everywhere: load the dataset, (optionally)
take a class-balanced subset, corrupt the labels of the whole training pool with the noise
simulator, then carve meta / validation / training splits. ``data.meta_set: clean`` gives the
meta samples back their clean labels ("gold" samples, as if carved before corruption);
``noisy`` keeps the corrupted ones (Ghosh & Lan 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ..data import AugmentSpec, create_dataset, make_splits, split_off_test, strong_augment_policy
from ..data.stream import is_stream, pool_channel_stats, stream_options, to_pool
from ..errors import UserError
from ..noise import apply_noise, open_set
from ..seeding import derive_seed

__all__ = ["RunData", "prepare_data", "derive_seed", "balanced_subset", "resolve_meta_size", "strong_view_spec"]


@dataclass
class RunData:
    """Everything the training loop needs about the data of one run (tensors on the CPU)."""

    images: torch.Tensor            # uint8 (N, C, H, W): the training pool (train + val + meta)
    labels: torch.Tensor            # int64 (N,): the labels training sees
    clean_labels: torch.Tensor      # int64 (N,): ground truth, for metrics only
    splits: dict[str, torch.Tensor]  # 'train', 'val', 'meta': int64 indices into the pool
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec | None
    transition: np.ndarray          # the matrix the noise was drawn from
    open_set_mask: torch.Tensor | None = None  # images replaced by out-of-distribution ones
    test_carved: bool = False            # the test split was carved from the training images (no test set given)
    paths: list[str] | None = None       # source file of each pool image (file-backed data), else None
    test_paths: list[str] | None = None  # source file of each test image
    has_ground_truth: bool = True        # False: the labels are the user's and none is known to be right
    strong: AugmentSpec | None = None    # the strong view: data.augment's crop + flip, then data.strong_augment's
                                         # policy (None: data.strong_augment none); a method asks for it as a view
    has_labels: bool = True              # False: images without labels (self-supervised pretraining only):
                                         # labels all 0, one placeholder class, no validation or test split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[2])

    @property
    def is_noisy(self) -> torch.Tensor:
        """True where the label training sees is wrong (or the image is out of distribution)."""
        mask = self.labels != self.clean_labels
        if self.open_set_mask is not None:
            mask = mask | self.open_set_mask
        return mask

    def realized_noise_rate(self, split: str = "train") -> float | None:
        """The fraction of wrong labels in ``split``; ``None`` without ground truth."""
        if not self.has_ground_truth:
            return None
        idx = self.splits[split]
        return float(self.is_noisy[idx].float().mean()) if len(idx) else float("nan")


def balanced_subset(y: np.ndarray, size: int, *, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced random subset of ``size`` samples."""
    if size >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    per = np.full(num_classes, size // num_classes)
    per[: size % num_classes] += 1
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        out.append(rng.choice(idx, size=min(per[c], len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def _augment_spec(setting: Any, *, channels: int, size: int) -> AugmentSpec | None:
    if setting in (None, "none", False):
        return None
    if setting == "auto":
        # CIFAR-style colour images get the standard crop+flip; digits/MNIST get none.
        return AugmentSpec(crop_padding=4, hflip=True) if channels == 3 and size >= 24 else None
    if isinstance(setting, Mapping):
        from ..config import check_augment

        check_augment(setting)
        return AugmentSpec(**{k: setting[k] for k in setting})
    raise UserError(f"data.augment must be auto, none or a mapping, got {setting!r}")


def strong_view_spec(setting: Any, weak: AugmentSpec | None) -> AugmentSpec | None:
    """The strong view of a run: the weak view's crop and flip (``data.augment``; none for
    ``none``), followed by the ``data.strong_augment`` policy, as FixMatch / SOP+ / ProMix build
    it; ``None`` when ``data.strong_augment`` is ``none``."""
    policy = strong_augment_policy(setting)
    if policy is None:
        return None
    return AugmentSpec(crop_padding=weak.crop_padding if weak is not None else 0,
                       hflip=bool(weak.hflip) if weak is not None else False, policy=policy)


def _open_set_source(name: str, *, like: np.ndarray, cfg: Mapping[str, Any], seed: int) -> np.ndarray:
    """Out-of-distribution images for open-set noise: another dataset's, or random pixels."""
    if name == "random":
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(max(1, len(like) // 2), *like.shape[1:]), dtype=np.uint8)
    other = create_dataset(name, data_dir=cfg["data"]["dir"], cache_dir=cfg["data"]["cache_dir"])
    if other.x_train.shape[1:] != like.shape[1:]:
        raise UserError(
            f"open-set source {name!r} has images of shape {other.x_train.shape[1:]}, "
            f"but the training images are {like.shape[1:]}"
        )
    return other.x_train


def resolve_meta_size(setting: Any, pool_size: int, *, needs_meta_set: bool) -> int:
    """``data.meta_size``: an integer, or ``auto`` = 0 for methods without a meta set and
    ``min(1000, 10% of the training pool)`` for meta methods (1000 on CIFAR-size sets as in the
    MW-Net / L2RW / L2B papers, about a tenth of small sets such as digits)."""
    if setting == "auto":
        return min(1000, int(round(0.1 * pool_size))) if needs_meta_set else 0
    return int(setting)


def prepare_data(cfg: Mapping[str, Any], *, needs_meta_set: bool = False) -> RunData:
    """Build :class:`RunData` from a resolved config (see :mod:`noisylabels.config`).

    ``needs_meta_set`` resolves ``data.meta_size: auto`` (see :func:`resolve_meta_size`).
    """
    from ..config import labels_from_user

    dcfg, ncfg, seed = cfg["data"], cfg["noise"], int(cfg["seed"])
    options = dict(dcfg["options"] or {})
    trusted_csv = options.pop("trusted_csv", None)
    if trusted_csv is not None and dcfg["train_subset"]:
        raise UserError("data.options.trusted_csv with data.train_subset is not supported (the subset could drop "
                        "verified samples)")
    raw = create_dataset(dcfg["name"], data_dir=dcfg["dir"], cache_dir=dcfg["cache_dir"], **options,
                         **stream_options(dcfg))
    labeled = bool(getattr(raw, "has_labels", True))
    if not labeled:
        _check_unlabeled(cfg, needs_meta_set=needs_meta_set, trusted_csv=trusted_csv)
    truth = labeled and (raw.y_train_clean is not None or not labels_from_user(cfg))
    meta_kind = str(dcfg["meta_set"])
    if meta_kind == "auto":  # unresolved (resolve_method_defaults): the method's preset, else clean
        from ..methods import METHODS

        meta_kind = METHODS.get(str(cfg["method"]["name"])).meta_set_kind or "clean"
    trusted = None
    if trusted_csv is not None:
        if not needs_meta_set:
            raise UserError(f"data.options.trusted_csv is the clean meta set of a meta method; method "
                            f"{cfg['method']['name']!r} uses none")
        if meta_kind != "clean":
            raise UserError("data.options.trusted_csv gives a clean meta set; it contradicts --meta-set noisy")
        if dcfg["meta_size"] != "auto":
            raise UserError("data.options.trusted_csv: the meta set is its rows; leave data.meta_size at auto")
        trusted = _read_trusted(trusted_csv, raw, data_dir=dcfg["dir"])
    elif needs_meta_set and meta_kind == "clean" and not truth:
        raise UserError(
            f"method {cfg['method']['name']!r} needs a clean meta set, but the labels are yours and none is known "
            f"to be right: give a CSV of labels you verified (--set data.options.trusted_csv=FILE, path,label rows; "
            f"they become the meta set), or use --meta-set noisy with a robust meta loss (e.g. --method rmnw-net, "
            f"MAE meta loss)")
    if raw.x_test is None and not labeled:  # nothing to score a test set against: every image trains
        import dataclasses

        raw = dataclasses.replace(raw, x_test=raw.x_train[np.zeros(0, dtype=np.int64)], y_test=np.zeros(0, np.int64),
                                  paths_test=None)
    if raw.x_test is None:
        raw = split_off_test(raw, test_fraction=0.2, keep=None if trusted is None else trusted[0])
        if trusted is not None:
            trusted = _read_trusted(trusted_csv, raw, data_dir=dcfg["dir"])
    num_classes = len(raw.classes)
    x, given = raw.x_train, raw.y_train.astype(np.int64)
    clean = raw.y_train_clean.astype(np.int64) if raw.y_train_clean is not None else given.copy()
    paths, test_paths = raw.paths_train, raw.paths_test

    if dcfg["train_subset"]:
        # fixed across run seeds: seeds then vary noise, splits and initialisation, not the data
        keep = balanced_subset(clean, int(dcfg["train_subset"]), num_classes=num_classes, seed=0)
        x, given, clean = x[keep], given[keep], clean[keep]
        paths = None if paths is None else [paths[i] for i in keep]

    x_test, y_test = raw.x_test, raw.y_test.astype(np.int64)
    if dcfg["test_subset"]:
        # a fixed subset (independent of the run seed) so every run is scored on the same samples
        keep = balanced_subset(y_test, int(dcfg["test_subset"]), num_classes=num_classes, seed=0)
        x_test, y_test = x_test[keep], y_test[keep]
        test_paths = None if test_paths is None else [test_paths[i] for i in keep]

    noise_type = str(ncfg["type"]).lower()
    if is_stream(x) and noise_type in ("instance", "open-set"):
        raise UserError(f"{noise_type} noise needs every image in memory; set data.stream=false")
    rate = float(ncfg["rate"])
    options = dict(ncfg["options"] or {})
    open_mask = None
    if noise_type == "open-set":
        source = options.pop("source", "random")
        other = _open_set_source(source, like=x, cfg=cfg, seed=derive_seed(seed, "open-set-source"))
        x, noisy, replaced = open_set(x, given, rate=rate, other_images=other, num_classes=num_classes,
                                      seed=derive_seed(seed, "noise"), **options)
        transition = np.eye(num_classes)
        open_mask = torch.from_numpy(np.asarray(replaced, dtype=bool))
    elif not labeled:  # no labels: nothing to corrupt (the noise type is none, checked above)
        noisy, transition = given.copy(), np.eye(num_classes)
    else:
        features = x.reshape(len(x), -1).astype(np.float32) / 255.0 if noise_type == "instance" else None
        result = apply_noise(noise_type, given, num_classes=num_classes, rate=rate,
                             seed=derive_seed(seed, "noise"), features=features, **options)
        noisy, transition = result.noisy_labels, result.transition

    meta_clean = dcfg["meta_set"] in ("clean", "auto")  # auto: resolved by the method, else clean
    if trusted is not None:  # the verified labels are the truth of their samples and the meta set
        clean = clean.copy()
        clean[trusted[0]] = trusted[1]
    splits = make_splits(clean if meta_clean else noisy, val_fraction=float(dcfg["val_fraction"]) if labeled else 0.0,
                         meta_size=resolve_meta_size(dcfg["meta_size"], len(clean), needs_meta_set=needs_meta_set),
                         seed=derive_seed(seed, "splits"),
                         num_classes=num_classes, meta=None if trusted is None else trusted[0])
    labels = np.asarray(noisy, dtype=np.int64).copy()
    if meta_clean and len(splits["meta"]):
        labels[splits["meta"]] = clean[splits["meta"]]

    images, test_images = to_pool(x, dcfg), to_pool(x_test, dcfg)
    mean, std = pool_channel_stats(images)
    weak = _augment_spec(dcfg["augment"], channels=images.shape[1], size=images.shape[2])
    return RunData(
        images=images,
        labels=torch.from_numpy(labels),
        clean_labels=torch.from_numpy(clean),
        splits={k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in splits.items()},
        test_images=test_images,
        test_labels=torch.from_numpy(y_test),
        classes=list(raw.classes),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        augment=weak,
        transition=np.asarray(transition, dtype=np.float64),
        open_set_mask=open_mask,
        test_carved=bool(raw.test_carved),
        paths=None if paths is None else list(paths),
        test_paths=None if test_paths is None else list(test_paths),
        has_ground_truth=bool(truth),
        strong=strong_view_spec(dcfg.get("strong_augment", "randaugment+cutout"), weak),
        has_labels=labeled,
    )


def _check_unlabeled(cfg: Mapping[str, Any], *, needs_meta_set: bool, trusted_csv: Any) -> None:
    """Images without labels: nothing that needs labels may be asked for."""
    if str(cfg["noise"]["type"]).lower() != "none":
        raise UserError(f"the images have no labels (data.options.unlabeled): --noise {cfg['noise']['type']} has "
                        f"nothing to corrupt; use --noise none")
    if needs_meta_set or trusted_csv is not None:
        raise UserError("the images have no labels (data.options.unlabeled): a meta set needs labels")


def _read_trusted(path: Any, raw: Any, *, data_dir: Any) -> tuple[np.ndarray, np.ndarray]:
    """``data.options.trusted_csv``: (pool positions, labels) of the user's verified samples."""
    from pathlib import Path

    from ..data.labels_csv import read_labels_csv
    from ..data.registry import resolve_path

    if raw.paths_train is None:
        raise UserError(f"data.options.trusted_csv needs file-backed data (imagefolder, a labels CSV); "
                        f"{raw.name} has no image files")
    csv_path = resolve_path(path, None if data_dir is None else Path(data_dir), what="trusted_csv")
    firsts = {p.split("/", 1)[0] for p in raw.paths_train if "/" in p}
    prefix = next(iter(firsts)) if len(firsts) == 1 else ""
    try:
        pos, labels = read_labels_csv(csv_path, classes=raw.classes, train_paths=raw.paths_train, prefix=prefix)
    except UserError as exc:
        raise UserError(str(exc).replace("labels_csv", "trusted_csv", 1)) from None
    if len(pos) == 0:
        raise UserError(f"trusted_csv {csv_path} has no rows")
    return pos, labels.astype(np.int64)
