"""Noise registry, result type, validation and vectorised label sampling.

Conventions
-----------
A transition matrix ``T`` is row-stochastic with ``T[i, j] = P(noisy = j | clean = i)``
(Patrini et al., 2017, "Making deep neural networks robust to label noise: a
loss correction approach", Sec. 2).  Class-conditional noise draws every
sample's noisy label independently from ``Categorical(T[y])``, so the realised
noise rate matches the expected one only within sampling error.

Randomness: ``seed`` feeds :class:`numpy.random.SeedSequence`, which is split
into two independent streams, one for the matrix (e.g. the fixed targets of
``flip``) and one for sampling labels.  :func:`transition_matrix` with the same
seed therefore returns exactly the matrix :func:`apply_noise` sampled from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from ..registry import Registry, call_with_options

__all__ = [
    "NOISE",
    "NoiseResult",
    "apply_noise",
    "transition_matrix",
    "list_noise_types",
    "describe_noise_type",
    "noise_kind",
    "sample_from_transition",
    "check_rate_below",
    "register_noise",
]

#: Registry of noise types.  Entries carry a ``noise_kind`` attribute:
#: ``"class-conditional"`` (a matrix builder ``fn(num_classes, rate, rng, /, **options)``),
#: ``"instance"`` (a sampler ``fn(labels, features, num_classes, rate, seed, /, **options)``
#: returning :class:`NoiseResult`) or ``"open-set"`` (handled by the data pipeline).
NOISE: Registry[Callable[..., Any]] = Registry("noise type")

CLASS_CONDITIONAL = "class-conditional"
INSTANCE = "instance"
OPEN_SET = "open-set"


def register_noise(name: str, kind: str, *, help: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` in :data:`NOISE` under ``name`` with ``fn.noise_kind = kind``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.noise_kind = kind  # type: ignore[attr-defined]
        NOISE.register(name, help=help)(fn)
        return fn

    return deco


@dataclass(frozen=True, eq=False)
class NoiseResult:
    """Noisy labels together with how they were drawn.

    Attributes
    ----------
    noisy_labels:
        ``int64`` array ``(N,)``.
    transition:
        ``(K, K)`` float64 matrix, ``T[i, j] = P(noisy = j | clean = i)`` the labels
        were drawn from.  For instance-dependent noise it is the mean of the
        per-sample rows within each clean class (identity row for a class with
        no samples).
    realized_rate:
        Fraction of samples whose label changed.
    clean_labels:
        ``int64`` array ``(N,)``, the labels the noise was applied to.
    noise_type:
        Registered name of the noise type.
    rate:
        The nominal rate requested (ignored by ``none`` and ``custom``).
    """

    noisy_labels: np.ndarray
    transition: np.ndarray
    realized_rate: float
    clean_labels: np.ndarray
    noise_type: str = ""
    rate: float = 0.0

    @property
    def noisy_mask(self) -> np.ndarray:
        """Boolean ``(N,)`` mask of the samples whose label was changed."""
        return self.noisy_labels != self.clean_labels

    @property
    def num_classes(self) -> int:
        return int(self.transition.shape[0])

    def expected_rate(self) -> float:
        """Expected noise rate under :attr:`transition` for these clean labels: ``mean_i 1 - T[y_i, y_i]``."""
        if self.clean_labels.size == 0:
            return 0.0
        return float(np.mean(1.0 - np.diag(self.transition)[self.clean_labels]))

    def empirical_transition(self) -> np.ndarray:
        """Row-normalised counts ``C[i, j] = #(clean=i, noisy=j) / #(clean=i)`` (identity row if class absent)."""
        k = self.num_classes
        counts = np.bincount(
            self.clean_labels * k + self.noisy_labels, minlength=k * k
        ).reshape(k, k).astype(np.float64)
        n = counts.sum(axis=1, keepdims=True)
        out = np.divide(counts, n, out=np.eye(k), where=n > 0)
        return out


# --------------------------------------------------------------------------- validation


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise UserError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if num_classes < 2:
        raise UserError(f"num_classes must be >= 2, got {num_classes}")
    return int(num_classes)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool):
        raise UserError(f"noise rate must be a number in [0, 1), got {rate!r}")
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise UserError(f"noise rate must be a number in [0, 1), got {rate!r}") from None
    if not (0.0 <= r < 1.0):  # also rejects NaN
        raise UserError(f"noise rate must be in [0, 1), got {rate!r}")
    return r


def check_rate_below(name: str, rate: float, bound: float, why: str) -> None:
    """Raise :class:`UserError` unless ``rate < bound`` (so the clean class stays the most likely label)."""
    if not rate < bound:
        raise UserError(
            f"noise rate {rate:g} too high for {name!r}: must be < {bound:.4g} so that {why}"
        )


def _check_labels(labels: Any, num_classes: int, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise UserError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size and arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise UserError(f"{what} must be integers, got non-integer values")
    elif arr.size and arr.dtype.kind not in "iu":
        raise UserError(f"{what} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=True)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise UserError(f"{what} must lie in [0, {num_classes}), found {bad}")
    return arr


def _call(name: str, fn: Callable[..., Any], /, *args: Any, **options: Any) -> Any:
    """Call a registered builder, turning unknown options into a one-line :class:`UserError`."""
    import inspect

    params = inspect.signature(fn).parameters
    taken = [k for k in options if k in params and params[k].kind is inspect.Parameter.POSITIONAL_ONLY]
    if taken:
        valid = [k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise UserError(
            f"noise type {name!r} has no option(s) {', '.join(map(repr, taken))}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    return call_with_options("noise type", name, fn, *args, **options)


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (matrix, sampling) generators derived from ``seed``."""
    m, s = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(m), np.random.default_rng(s)


# --------------------------------------------------------------------------- sampling


def _sample_class_conditional(labels: np.ndarray, T: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``noisy_i ~ Categorical(T[labels_i])`` by inverse CDF, one uniform per sample.

    Loops over classes (K iterations), never over samples.
    """
    n = labels.shape[0]
    u = rng.random(n)
    cdf = np.cumsum(T, axis=1)
    cdf = cdf / cdf[:, -1:]  # last entry exactly 1.0, so u < 1 always lands in a column
    noisy = np.empty(n, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=T.shape[0])
    start = 0
    for c, cnt in enumerate(counts):
        if cnt == 0:
            continue
        idx = order[start : start + cnt]
        noisy[idx] = np.searchsorted(cdf[c], u[idx], side="right")
        start += cnt
    return noisy


def _sample_rows(P: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``noisy_i ~ Categorical(P[i])`` for a per-sample ``(N, K)`` probability matrix."""
    u = rng.random(P.shape[0])
    cdf = np.cumsum(P, axis=1)
    cdf = cdf / cdf[:, -1:]
    return (cdf <= u[:, None]).sum(axis=1).astype(np.int64)


def _check_transition(T: Any, num_classes: int, source: str) -> np.ndarray:
    """Validate a row-stochastic ``(K, K)`` matrix (tolerance 1e-6); returns exact-row-sum float64."""
    try:
        M = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{source}: transition matrix must be numeric") from None
    if M.shape != (num_classes, num_classes):
        raise UserError(
            f"{source}: transition matrix must have shape ({num_classes}, {num_classes}), got {M.shape}"
        )
    if not np.all(np.isfinite(M)):
        raise UserError(f"{source}: transition matrix has non-finite entries")
    if M.min() < -1e-6:
        i, j = np.unravel_index(int(np.argmin(M)), M.shape)
        raise UserError(f"{source}: transition matrix has a negative entry T[{i},{j}]={M[i, j]:g}")
    sums = M.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
    if bad.size:
        raise UserError(
            f"{source}: transition matrix rows must sum to 1 (tolerance 1e-6); row {int(bad[0])} sums to {sums[bad[0]]:.8g}"
        )
    M = np.clip(M, 0.0, None)
    return M / M.sum(axis=1, keepdims=True)


def sample_from_transition(labels: Any, transition: Any, *, seed: int) -> NoiseResult:
    """Draw ``noisy_i ~ Categorical(T[y_i])`` for an arbitrary row-stochastic ``T``.

    Parameters
    ----------
    labels:
        Clean integer labels ``(N,)`` in ``[0, K)``.
    transition:
        ``(K, K)`` row-stochastic matrix, ``T[i, j] = P(noisy = j | clean = i)``.
    seed:
        Seed of the sampling stream.

    Returns
    -------
    NoiseResult
        With ``noise_type="custom"``.
    """
    T0 = np.asarray(transition)
    if T0.ndim != 2:
        raise UserError(f"transition matrix must be 2-D, got shape {T0.shape}")
    k = _check_num_classes(T0.shape[0])
    T = _check_transition(T0, k, "transition")
    y = _check_labels(labels, k)
    rng = np.random.default_rng(_check_seed(seed))
    noisy = _sample_class_conditional(y, T, rng)
    return _result(noisy, T, y, "custom", 0.0)


def _result(noisy: np.ndarray, T: np.ndarray, clean: np.ndarray, name: str, rate: float) -> NoiseResult:
    noisy = np.ascontiguousarray(noisy, dtype=np.int64)
    realized = float(np.mean(noisy != clean)) if clean.size else 0.0
    T = np.asarray(T, dtype=np.float64)
    return NoiseResult(
        noisy_labels=noisy,
        transition=T,
        realized_rate=realized,
        clean_labels=clean,
        noise_type=name,
        rate=rate,
    )


# --------------------------------------------------------------------------- public API


def list_noise_types() -> list[str]:
    """Sorted names of all registered noise types."""
    return NOISE.names()


def describe_noise_type(name: str) -> str:
    """One-line description of a noise type (raises :class:`UserError` if unknown)."""
    NOISE.get(name)
    return NOISE.describe(name)


def noise_kind(name: str) -> str:
    """``"class-conditional"``, ``"instance"`` or ``"open-set"`` for a registered noise type."""
    return NOISE.get(name).noise_kind  # type: ignore[attr-defined,no-any-return]


def _open_set_error(name: str) -> UserError:
    return UserError(
        f"noise type {name!r} replaces training images, not only labels, so it needs the data "
        "pipeline: set noise.type: open-set and noise.options.source (the out-of-distribution "
        "image set) in the run config, or call noisylabels.noise.open_set(x, labels, ...) directly"
    )


def transition_matrix(
    noise_type: str,
    *,
    num_classes: int,
    rate: float,
    seed: int = 0,
    **options: Any,
) -> np.ndarray:
    """The ``(K, K)`` transition matrix of a class-conditional noise type.

    Parameters
    ----------
    noise_type:
        A registered class-conditional type (see :func:`list_noise_types`).
    num_classes:
        ``K >= 2``.
    rate:
        Noise rate ``eta`` in ``[0, 1)``; per-type upper bounds apply.
    seed:
        Only matters for types with random structure (``flip``, ``flip2``); the
        same seed gives the matrix :func:`apply_noise` samples from.
    **options:
        Type-specific options (e.g. ``include_true_class`` for ``symmetric``).

    Returns
    -------
    numpy.ndarray
        float64 ``(K, K)``, ``T[i, j] = P(noisy = j | clean = i)``, rows sum to 1.
    """
    fn = NOISE.get(noise_type)
    name = str(noise_type).lower()
    kind = fn.noise_kind  # type: ignore[attr-defined]
    if kind == OPEN_SET:
        raise _open_set_error(name)
    if kind != CLASS_CONDITIONAL:
        raise UserError(
            f"noise type {name!r} is instance-dependent and has no single transition matrix; "
            "use apply_noise(...).transition (per-class mean of the per-sample rows)"
        )
    k = _check_num_classes(num_classes)
    r = _check_rate(rate)
    mrng, _ = _streams(_check_seed(seed))
    T = _call(name, fn, k, r, mrng, **options)
    return _check_transition(T, k, f"noise type {name!r}")


def apply_noise(
    noise_type: str,
    labels: Any,
    *,
    num_classes: int,
    rate: float,
    seed: int,
    features: np.ndarray | None = None,
    **options: Any,
) -> NoiseResult:
    """Corrupt ``labels`` with a registered noise type; pure and seeded.

    Parameters
    ----------
    noise_type:
        Registered name, see :func:`list_noise_types`.
    labels:
        Clean integer labels ``(N,)`` in ``[0, num_classes)``.
    num_classes:
        ``K >= 2``.
    rate:
        Noise rate ``eta`` in ``[0, 1)``.  Each type additionally requires the
        clean class to stay the most likely label (e.g. ``eta < 0.5`` for
        ``pair``).  Ignored by ``none`` and ``custom``.
    seed:
        Non-negative integer; same seed -> same labels.
    features:
        ``(N, ...)`` inputs, required by ``instance`` (flattened per sample).
    **options:
        Type-specific options; unknown ones raise :class:`UserError`.

    Returns
    -------
    NoiseResult
    """
    fn = NOISE.get(noise_type)
    name = str(noise_type).lower()
    kind = fn.noise_kind  # type: ignore[attr-defined]
    if kind == OPEN_SET:
        raise _open_set_error(name)
    k = _check_num_classes(num_classes)
    r = _check_rate(rate)
    s = _check_seed(seed)
    y = _check_labels(labels, k)
    if kind == INSTANCE:
        if features is None:
            raise UserError(f"noise type {name!r} needs features (the training inputs), none given")
        res = _call(name, fn, y, features, k, r, s, **options)
        return res  # type: ignore[no-any-return]
    mrng, srng = _streams(s)
    T = _call(name, fn, k, r, mrng, **options)
    T = _check_transition(T, k, f"noise type {name!r}")
    noisy = _sample_class_conditional(y, T, srng)
    return _result(noisy, T, y, name, r)
