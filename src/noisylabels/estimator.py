"""A scikit-learn estimator for array data (tabular features, embeddings): train with a
noisy-label method on the library's loop, predict, and find the wrong labels.

The shape of the API follows cleanlab's ``CleanLearning``: ``fit(X, y)``, ``predict``,
``predict_proba``, ``score``, and ``find_label_issues(X, y)`` returning per-sample label
quality, the suggested label and ``is_label_issue`` from cross-fitted probabilities
(:func:`noisylabels.train.crossfit.crossfit_pred_probs` with the same method and model). Unlike
``CleanLearning``, the noise is handled by the training ``method`` itself (GCE, MW-Net, ...)
instead of by dropping the flagged samples before a final fit.

Array data and the training pipeline: the loop keeps inputs as uint8 (the image format), so
``fit`` standardises each column (mean and standard deviation of the training data), clips
it to +-4 standard deviations and stores it in 256 levels (a resolution of 0.03 standard
deviations), laid out as a one-channel square ``ceil(sqrt(d))`` image with zero padding;
``predict`` applies the same transform. Use the MLP (the default) for such data.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .errors import UserError

__all__ = ["NoisyLabelClassifier"]

_SECTIONS = ("method", "loss", "model", "optim", "train", "data", "noise")
_CLIP = 4.0


def _validate(est: BaseEstimator, X: Any, y: Any = None, *, reset: bool) -> Any:
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6
        return est._validate_data(X, y, reset=reset) if y is not None else est._validate_data(X, reset=reset)
    if y is None:
        return validate_data(est, X, reset=reset, dtype=np.float64)
    return validate_data(est, X, y, reset=reset, dtype=np.float64)


class NoisyLabelClassifier(ClassifierMixin, BaseEstimator):
    """Train a classifier on noisy labels with a method of this library.

    Parameters
    ----------
    method:
        A registered training method (``noisylabels methods``): ``erm``, ``truncated-lq``,
        ``mwnet`` (meta methods carve a meta set from the training data), ...
    model:
        A registered model; ``mlp`` for array data.
    loss:
        The loss (``ce``, ``gce``, ``sce``, ...).
    epochs, batch_size, lr:
        The schedule (SGD with momentum and a cosine schedule unless ``optim_*`` options say otherwise).
    folds:
        Folds of the cross-fitting :meth:`find_label_issues` runs.
    val_fraction:
        Fraction of the training data held out to select the epoch (labels as noisy as training).
    filter_by:
        Confident-learning filter of :meth:`find_label_issues` (cleanlab's ``filter_by``).
    seed:
        Seeds the splits, folds and initialisation: a fixed seed gives the same model.
    device, num_threads:
        Where to train; torch threads (``None`` leaves torch's setting).
    **options:
        Further config fields, named ``<section>_<key>``: ``loss_q=0.7``,
        ``model_hidden=(128,)``, ``method_meta_interval=2``, ``optim_weight_decay=0.0``,
        ``data_meta_size=100``; a name without a section prefix is a ``method`` option.

    Attributes
    ----------
    classes_:
        The labels seen by ``fit``, sorted.
    model_:
        The selected torch model.
    label_issues_:
        What :meth:`find_label_issues` returned last.
    """

    def __init__(self, method: str = "erm", model: str = "mlp", *, loss: str = "ce", epochs: int = 30,
                 batch_size: int = 64, lr: float = 0.1, folds: int = 5, val_fraction: float = 0.1,
                 filter_by: str = "prune_by_noise_rate", seed: int = 0, device: str = "cpu",
                 num_threads: int | None = 1, **options: Any) -> None:
        self.method = method
        self.model = model
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.folds = folds
        self.val_fraction = val_fraction
        self.filter_by = filter_by
        self.seed = seed
        self.device = device
        self.num_threads = num_threads
        for key, value in options.items():
            setattr(self, key, value)
        self._option_names = sorted(options)

    # sklearn's get_params reads __init__'s named parameters; the **options are added here so
    # that clone / set_params / grid search carry them too
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        for key in getattr(self, "_option_names", []):
            params[key] = getattr(self, key)
        return params

    def set_params(self, **params: Any) -> NoisyLabelClassifier:
        known = set(super().get_params(deep=False))
        for key, value in params.items():
            if key not in known and key not in self._option_names:
                self._option_names = sorted({*self._option_names, key})
            setattr(self, key, value)
        return self

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------------- internals
    def _config(self, out: str) -> dict[str, Any]:
        from .config import resolve_config

        over: dict[str, Any] = {"method.name": self.method, "model.name": self.model, "loss.name": self.loss,
                                "train.epochs": self.epochs, "train.batch_size": self.batch_size, "optim.lr": self.lr,
                                "seed": self.seed, "device": self.device, "out": out, "train.progress": False,
                                "train.checkpoint": False, "train.num_threads": self.num_threads,
                                "data.val_fraction": self.val_fraction, "noise.type": "none", "noise.rate": 0.0}
        for key in self._option_names:
            value = getattr(self, key)
            section, _, rest = key.partition("_")
            if section in _SECTIONS and rest:
                over[f"{section}.{rest}"] = list(value) if isinstance(value, tuple) else value
            else:
                over[f"method.{key}"] = value
        return resolve_config(overrides=over)

    def _to_images(self, X: np.ndarray) -> torch.Tensor:
        z = (X - self._mean) / self._scale
        q = np.round((np.clip(z, -_CLIP, _CLIP) + _CLIP) * (255.0 / (2 * _CLIP))).astype(np.uint8)
        side = self._side
        pad = np.zeros((len(q), side * side), dtype=np.uint8)
        pad[:, : q.shape[1]] = q
        return torch.from_numpy(pad.reshape(len(q), 1, side, side))

    def _run_data(self, X: np.ndarray, y: np.ndarray, cfg: dict[str, Any]):
        from .data import channel_stats, make_splits
        from .train.build import build_method
        from .train.prepare import RunData, derive_seed, resolve_meta_size

        k = len(self.classes_)
        images = self._to_images(X)
        method = build_method(cfg)
        meta = resolve_meta_size(cfg["data"]["meta_size"], len(y), needs_meta_set=method.needs_meta_set)
        try:
            splits = make_splits(y, val_fraction=float(self.val_fraction), meta_size=meta,
                                 seed=derive_seed(int(self.seed), "splits"), num_classes=k)
        except UserError as err:
            raise ValueError(str(err)) from None
        mean, std = channel_stats(images)
        return RunData(images=images, labels=torch.from_numpy(y), clean_labels=torch.from_numpy(y.copy()),
                       splits={n: torch.from_numpy(v) for n, v in splits.items()},
                       test_images=images[:0], test_labels=torch.zeros(0, dtype=torch.long),
                       classes=[str(c) for c in self.classes_], mean=mean, std=tuple(max(s, 1e-3) for s in std),
                       augment=None, transition=np.eye(k))

    def _encode(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        if y is None:
            raise ValueError("NoisyLabelClassifier requires y to be passed, but the target y is None")
        X, y = _validate(self, X, y, reset=True)
        check_classification_targets(y)
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"NoisyLabelClassifier needs at least 2 classes; y has 1 class ({self.classes_[0]!r})")
        self._mean = X.mean(axis=0)
        scale = X.std(axis=0)
        self._scale = np.where(scale > 0, scale, 1.0)
        self._side = max(1, math.ceil(math.sqrt(X.shape[1])))
        return X, y_enc.astype(np.int64)

    # --------------------------------------------------------------------------- the API
    def fit(self, X: Any, y: Any) -> NoisyLabelClassifier:
        """Train on ``X`` (n_samples, n_features) with the (noisy) labels ``y``."""
        from .config import load_config
        from .detect import resolve_forget_rate
        from .train import build_context
        from .train import fit as train_fit

        X, y_enc = self._encode(X, y)
        with tempfile.TemporaryDirectory(prefix="noisylabels-") as out:
            cfg = self._config(out)
            data = self._run_data(X, y_enc, cfg)
            old = torch.get_num_threads()
            try:
                summary = train_fit(cfg, data=data, progress=False, resolve=resolve_forget_rate)
            finally:
                torch.set_num_threads(old)
            cfg = load_config(f"{out}/config.yaml")  # the run's config (e.g. an estimated forget rate)
            with torch.random.fork_rng(devices=[]):  # the method's prediction module (e.g. an ensemble), unseeded
                ctx = build_context(cfg, data=data)
            model = ctx.method.eval_model(ctx).cpu()
            model.load_state_dict(torch.load(f"{out}/best_model.pt", map_location="cpu", weights_only=True))
        model.eval()
        self.model_ = model
        self._norm = (data.mean, data.std)
        self.n_iter_ = int(summary.get("epochs_run") or 0)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        from .train.context import predict_proba

        check_is_fitted(self, "model_")
        X = _validate(self, X, reset=False)
        images = self._to_images(X)
        probs = predict_proba(self.model_, images, None, mean=self._norm[0], std=self._norm[1], batch_size=1024,
                              device=torch.device("cpu"))
        return probs.numpy().astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample."""
        probs = self.predict_proba(X)
        return self.classes_[np.argmax(probs, axis=1)]

    def find_label_issues(self, X: Any = None, y: Any = None) -> dict[str, np.ndarray]:
        """Which labels of ``(X, y)`` look wrong, from ``folds``-fold cross-fitted probabilities.

        Returns
        -------
        dict of numpy arrays, one entry per sample of ``y``
            ``is_label_issue`` (bool), ``label_quality`` (self-confidence, lower = worse),
            ``given_label`` and ``predicted_label`` (in the original label values), and
            ``pred_probs`` (n, K). Also stored as ``label_issues_``; the estimated number of
            wrong labels is ``label_issues_['num_issues_estimate']``.
        """
        from .detect import estimate_noise, find_label_issues, label_quality_scores
        from .train.crossfit import crossfit_pred_probs

        if X is None or y is None:
            raise ValueError("find_label_issues needs X and y (the data whose labels to check)")
        keep = (getattr(self, "classes_", None), getattr(self, "n_features_in_", None),
                getattr(self, "_mean", None), getattr(self, "_scale", None), getattr(self, "_side", None))
        X, y_enc = self._encode(X, y)
        with tempfile.TemporaryDirectory(prefix="noisylabels-cf-") as out:
            cfg = self._config(out)
            data = self._run_data(X, y_enc, cfg)
            # every sample is cross-fitted: the validation split selects each fold's epoch only
            old = torch.get_num_threads()
            try:
                crossfit_pred_probs(cfg, folds=int(self.folds), data=data)
            finally:
                torch.set_num_threads(old)
            probs = np.load(f"{out}/pred_probs.npy", allow_pickle=False).astype(np.float64)
        if keep[0] is not None and hasattr(self, "model_"):  # keep the fitted model's encoding
            self.classes_, self.n_features_in_, self._mean, self._scale, self._side = keep
        train = data.splits["train"].numpy()
        mask = np.zeros(len(y_enc), dtype=bool)
        mask[train] = find_label_issues(y_enc[train], probs[train], filter_by=self.filter_by,
                                        allow_missing_classes=True)
        held = np.setdiff1d(np.arange(len(y_enc)), train)
        if len(held) > len(np.unique(y_enc)):
            mask[held] = find_label_issues(y_enc[held], probs[held], filter_by=self.filter_by,
                                           allow_missing_classes=True)
        classes = np.unique(np.asarray(y))
        result = {"is_label_issue": mask,
                  "label_quality": label_quality_scores(y_enc, probs),
                  "given_label": classes[y_enc], "predicted_label": classes[probs.argmax(axis=1)],
                  "pred_probs": probs,
                  "num_issues_estimate": np.asarray(estimate_noise(y_enc, probs, allow_missing_classes=True)
                                                    .num_issues)}
        self.label_issues_ = result
        return result
