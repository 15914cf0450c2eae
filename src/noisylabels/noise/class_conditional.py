"""Class-conditional label noise: transition-matrix builders registered in :data:`NOISE`.

Every builder has the signature ``fn(num_classes, rate, rng, /, **options) -> T``
with ``T[i, j] = P(noisy = j | clean = i)``; :func:`noisylabels.noise.apply_noise`
then draws each sample's noisy label from ``Categorical(T[y])``.  Rates are
bounded so the clean class stays the most likely label of every row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from .classmaps import CIFAR10_ASYM_MAP, FASHION_ASYM_MAP, MNIST_ASYM_MAP, cifar100_superclass_groups
from .core import CLASS_CONDITIONAL, _check_transition, check_rate_below, register_noise

__all__ = [
    "none_matrix",
    "symmetric_matrix",
    "uniform_matrix",
    "pair_matrix",
    "flip_matrix",
    "flip2_matrix",
    "class_map_matrix",
    "cifar10_asym_matrix",
    "cifar100_next_matrix",
    "cifar100_superclass_matrix",
    "fashion_asym_matrix",
    "custom_matrix",
    "load_matrix",
]

_MOST_LIKELY = "the clean class stays the most likely label"


def _need_classes(name: str, num_classes: int, expected: int) -> None:
    if num_classes != expected:
        raise UserError(
            f"noise type {name!r} is defined for {expected} classes, got num_classes={num_classes}"
        )


def _need_bool(name: str, option: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise UserError(f"noise type {name!r}: option {option} must be true or false, got {value!r}")
    return bool(value)


@register_noise("none", CLASS_CONDITIONAL, help="no noise: identity transition (rate is ignored)")
def none_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """Identity transition: labels are returned unchanged; ``rate`` is ignored."""
    return np.eye(num_classes)


@register_noise(
    "symmetric",
    CLASS_CONDITIONAL,
    help="symmetric: flip with prob eta to a uniformly drawn other class "
    "(include_true_class=true: uniform over all K classes)",
)
def symmetric_matrix(
    num_classes: int, rate: float, rng: np.random.Generator, /, *, include_true_class: bool = False
) -> np.ndarray:
    """Symmetric (uniform) class-conditional noise.

    ``include_true_class=False`` (default): with probability ``eta`` the label is
    replaced by one of the *other* ``K-1`` classes uniformly,
    ``T = (1-eta) I + eta/(K-1) (11^T - I)``; the realised rate is ``eta``.
    This is the convention of Zhang & Sabuncu (2018, "Generalized cross
    entropy loss", Sec. 3.1) and of the NARL-Adjuster paper's text (its
    official code mixes over all K classes instead).  Requires ``eta < (K-1)/K``.

    ``include_true_class=True``: "uniform" noise of Meta-Weight-Net (Shu et al.,
    2019, Sec. 4.1) and Ghosh & Lan (2021, Sec. 2): with probability ``eta`` the label
    is replaced by a uniform draw over all ``K`` classes, so it stays correct
    with probability ``1 - eta + eta/K``: ``T = (1-eta) I + eta/K 11^T``; the
    realised rate is ``eta (K-1)/K``.
    """
    k = num_classes
    if _need_bool("symmetric", "include_true_class", include_true_class):
        return (1.0 - rate) * np.eye(k) + rate / k * np.ones((k, k))
    check_rate_below("symmetric", rate, (k - 1) / k, _MOST_LIKELY)
    return (1.0 - rate) * np.eye(k) + rate / (k - 1) * (np.ones((k, k)) - np.eye(k))


@register_noise(
    "uniform",
    CLASS_CONDITIONAL,
    help="uniform (MW-Net): with prob eta replace by a uniform draw over all K classes",
)
def uniform_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """Alias of ``symmetric`` with ``include_true_class=True`` (Shu et al., 2019; Ghosh & Lan, 2021).

    ``T = (1-eta) I + eta/K 11^T``; any ``eta < 1`` keeps the clean class most likely.
    """
    return symmetric_matrix(num_classes, rate, rng, include_true_class=True)


@register_noise("pair", CLASS_CONDITIONAL, help="pair flipping (Han et al. 2018): class i -> (i+1) mod K with prob eta")
def pair_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """Pair flipping of Han et al. (2018, "Co-teaching", Sec. 4, Fig. 3a).

    Class ``i`` is flipped to ``(i+1) mod K`` with probability ``eta``:
    ``T[i, i] = 1-eta``, ``T[i, (i+1) mod K] = eta``.  Requires ``eta < 0.5``.
    """
    check_rate_below("pair", rate, 0.5, _MOST_LIKELY)
    k = num_classes
    T = (1.0 - rate) * np.eye(k)
    T[np.arange(k), (np.arange(k) + 1) % k] += rate
    return T


def _random_other_classes(k: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(K, m)`` distinct targets per class, each different from the class itself."""
    keys = rng.random((k, k))
    np.fill_diagonal(keys, np.inf)
    return np.argsort(keys, axis=1, kind="stable")[:, :m]


def flip_targets(num_classes: int, seed: int) -> np.ndarray:
    """The fixed target of each class used by ``flip`` for this ``seed`` (shape ``(K,)``)."""
    from .core import _streams

    mrng, _ = _streams(seed)
    return _random_other_classes(num_classes, 1, mrng)[:, 0]


@register_noise(
    "flip",
    CLASS_CONDITIONAL,
    help="flip (Ghosh & Lan 2021): each class -> one fixed random other class with prob eta",
)
def flip_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """"Flip" noise of Ghosh & Lan (2021, Sec. 2: "corrupts the true labels with probability eta
    to a random single class").

    Not Meta-Weight-Net's "flip": Ghosh & Lan's footnote 3 says their ``flip2`` "is denoted as
    flip noise in" Shu et al. (2019); see :func:`flip2_matrix`.

    Each class ``i`` has one fixed target ``t(i) != i`` drawn from the seed
    (targets may coincide across classes; not a derangement); the label moves to
    ``t(i)`` with probability ``eta``.  Requires ``eta < 0.5``.
    """
    check_rate_below("flip", rate, 0.5, _MOST_LIKELY)
    k = num_classes
    t = _random_other_classes(k, 1, rng)[:, 0]
    T = (1.0 - rate) * np.eye(k)
    T[np.arange(k), t] += rate
    return T


@register_noise(
    "flip2",
    CLASS_CONDITIONAL,
    help="flip2 (Ghosh & Lan 2021; MW-Net's 'flip'): each class -> two fixed random other classes, eta/2 each",
)
def flip2_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """"Flip2" noise of Ghosh & Lan (2021, "Do we really need gold samples for sample weighting
    under label noise?", Sec. 2: corrupts "to two random other classes").

    This is the noise Meta-Weight-Net (Shu et al., 2019, Sec. 4.1) calls "flip" (Ghosh & Lan,
    footnote 3: "The flip2 noise model is denoted as flip noise in [54]").

    Each class ``i`` has two fixed, distinct targets different from ``i``,
    drawn from the seed; the label moves to each with probability ``eta/2``.
    Requires ``K >= 3`` and ``eta < 2/3``.
    """
    k = num_classes
    if k < 3:
        raise UserError(f"noise type 'flip2' needs at least 3 classes, got num_classes={k}")
    check_rate_below("flip2", rate, 2.0 / 3.0, _MOST_LIKELY)
    t = _random_other_classes(k, 2, rng)
    T = (1.0 - rate) * np.eye(k)
    rows = np.arange(k)
    T[rows, t[:, 0]] += rate / 2
    T[rows, t[:, 1]] += rate / 2
    return T


def class_map_matrix(num_classes: int, rate: float, mapping: dict[int, int]) -> np.ndarray:
    """``T`` moving each source class ``s`` of ``mapping`` to ``mapping[s]`` with prob ``rate``; other rows identity."""
    T = np.eye(num_classes)
    for s, t in mapping.items():
        T[s, s] = 1.0 - rate
        T[s, t] += rate
    return T


@register_noise(
    "cifar10-asym",
    CLASS_CONDITIONAL,
    help="CIFAR-10 asymmetric (Patrini et al. 2017): truck->automobile, bird->airplane, deer->horse, cat<->dog",
)
def cifar10_asym_matrix(num_classes: int, rate: float, rng: np.random.Generator, /, *,
                        cat_to_dog_only: bool = False) -> np.ndarray:
    """CIFAR-10 asymmetric noise of Patrini et al. (2017, Sec. 6, "Making deep neural networks robust to label noise").

    With probability ``eta``: truck (9) -> automobile (1), bird (2) -> airplane
    (0), deer (4) -> horse (7), cat (3) <-> dog (5).  The other five classes are
    untouched, so the realised rate over balanced CIFAR-10 is ``eta/2``.
    ``cat_to_dog_only=True``: cat -> dog but not dog -> cat, the map of NARL-Adjuster (Ding et
    al., Sec. 4.1, and its code's ``flip_smi``); realised rate ``2 eta / 5``.
    Requires ``K = 10`` and ``eta < 0.5``.
    """
    _need_classes("cifar10-asym", num_classes, 10)
    check_rate_below("cifar10-asym", rate, 0.5, _MOST_LIKELY)
    mapping = dict(CIFAR10_ASYM_MAP)
    if _need_bool("cifar10-asym", "cat_to_dog_only", cat_to_dog_only):
        del mapping[5]
    return class_map_matrix(10, rate, mapping)


@register_noise(
    "fashion-asym",
    CLASS_CONDITIONAL,
    help="Fashion-MNIST asymmetric: ankle boot->sneaker, sneaker->sandal, pullover->shirt, coat<->dress",
)
def fashion_asym_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """Fashion-MNIST asymmetric noise, the Fashion-MNIST analogue of Patrini et al. (2017)'s CIFAR-10 map.

    With probability ``eta``: ankle boot (9) -> sneaker (7), sneaker (7) ->
    sandal (5), pullover (2) -> shirt (6), coat (4) <-> dress (3).
    Requires ``K = 10`` and ``eta < 0.5``.
    """
    _need_classes("fashion-asym", num_classes, 10)
    check_rate_below("fashion-asym", rate, 0.5, _MOST_LIKELY)
    return class_map_matrix(10, rate, FASHION_ASYM_MAP)


@register_noise(
    "mnist-asym",
    CLASS_CONDITIONAL,
    help="MNIST asymmetric (Patrini et al. 2017): 2->7, 3->8, 5<->6, 7->1",
)
def mnist_asym_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """MNIST class-dependent noise of Patrini et al. (2017, Sec. 6): with probability ``eta``
    2 -> 7, 3 -> 8, 5 <-> 6, 7 -> 1 (digits that look alike). Requires ``K = 10`` and ``eta < 0.5``.
    """
    _need_classes("mnist-asym", num_classes, 10)
    check_rate_below("mnist-asym", rate, 0.5, _MOST_LIKELY)
    return class_map_matrix(10, rate, MNIST_ASYM_MAP)


@register_noise(
    "cifar100-next", CLASS_CONDITIONAL, help="CIFAR-100: each class -> next class circularly with prob eta"
)
def cifar100_next_matrix(num_classes: int, rate: float, rng: np.random.Generator, /) -> np.ndarray:
    """CIFAR-100 "next class" noise: ``pair`` flipping on 100 classes, ``i -> (i+1) mod 100`` with prob ``eta``.

    Requires ``K = 100`` and ``eta < 0.5``.
    """
    _need_classes("cifar100-next", num_classes, 100)
    check_rate_below("cifar100-next", rate, 0.5, _MOST_LIKELY)
    return pair_matrix(100, rate, rng)


@register_noise(
    "cifar100-superclass",
    CLASS_CONDITIONAL,
    help="CIFAR-100 hierarchical (Patrini et al. 2017): flips stay within the superclass",
)
def cifar100_superclass_matrix(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    /,
    *,
    mode: str = "next",
    grouping: str = "superclass",
) -> np.ndarray:
    """CIFAR-100 hierarchical noise of Patrini et al. (2017, Sec. 6).

    The 100 fine classes form 20 superclasses of 5.  ``mode="next"`` (the
    paper's): within each superclass, sorted by fine label, each class flips to
    the next one circularly with probability ``eta`` (requires ``eta < 0.5``).
    ``mode="uniform"``: ``eta`` is spread evenly over the other 4 classes of the
    superclass (requires ``eta < 0.8``).

    ``grouping="superclass"`` (default) uses the official CIFAR-100 coarse labels
    (:data:`~noisylabels.noise.classmaps.CIFAR100_COARSE`).  ``grouping="consecutive"``
    reproduces the public code of Patrini et al. and the many repositories
    copying it, which group fine labels ``5g..5g+4``; those blocks are *not*
    the real superclasses because fine labels are alphabetical.
    """
    name = "cifar100-superclass"
    _need_classes(name, num_classes, 100)
    if mode not in ("next", "uniform"):
        raise UserError(f"noise type {name!r}: option mode must be 'next' or 'uniform', got {mode!r}")
    if grouping not in ("superclass", "consecutive"):
        raise UserError(
            f"noise type {name!r}: option grouping must be 'superclass' or 'consecutive', got {grouping!r}"
        )
    check_rate_below(name, rate, 0.5 if mode == "next" else 0.8, _MOST_LIKELY)
    T = np.zeros((100, 100))
    for g in cifar100_superclass_groups(grouping):
        m = len(g)
        if mode == "next":
            block = (1.0 - rate) * np.eye(m)
            block[np.arange(m), (np.arange(m) + 1) % m] += rate
        else:
            block = (1.0 - rate) * np.eye(m) + rate / (m - 1) * (np.ones((m, m)) - np.eye(m))
        T[np.ix_(g, g)] = block
    return T


def load_matrix(path: str | Path) -> np.ndarray:
    """Read a matrix from ``.npy``, ``.csv`` (comma-separated) or ``.txt`` (whitespace-separated).

    Raises
    ------
    UserError
        Missing file, unsupported extension or unparsable content; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"transition matrix file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            M = np.load(p, allow_pickle=False)
        elif suffix == ".csv":
            M = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
        elif suffix in (".txt", ".tsv", ".dat"):
            M = np.loadtxt(p, dtype=np.float64, ndmin=2)
        else:
            raise UserError(
                f"transition matrix file {p}: unsupported extension {suffix or '(none)'!r}; use .npy, .csv or .txt"
            )
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read transition matrix file {p}: {msg}") from None
    M = np.asarray(M)
    if M.ndim != 2 or M.size == 0 or M.dtype.kind not in "biuf":
        raise UserError(f"transition matrix file {p} must hold a K x K matrix of numbers, got {M.dtype} {M.shape}")
    return M


@register_noise(
    "custom", CLASS_CONDITIONAL, help="custom: a user-given KxK transition matrix (option matrix or matrix_path)"
)
def custom_matrix(
    num_classes: int,
    rate: float,
    rng: np.random.Generator,
    /,
    *,
    matrix: Any = None,
    matrix_path: str | Path | None = None,
) -> np.ndarray:
    """A user-supplied transition matrix, ``T[i, j] = P(noisy = j | clean = i)``.

    Give exactly one of ``matrix`` (a ``KxK`` array-like) or ``matrix_path``
    (``.npy``, ``.csv`` or whitespace-separated ``.txt``).  Entries must be
    non-negative and rows sum to 1 within 1e-6.  ``rate`` is ignored; the
    expected rate follows from the diagonal.
    """
    if (matrix is None) == (matrix_path is None):
        raise UserError("noise type 'custom' needs exactly one of the options matrix or matrix_path")
    if matrix_path is not None:
        M = load_matrix(matrix_path)
        source = f"transition matrix file {matrix_path}"
    else:
        M = matrix
        source = "custom transition matrix"
    return _check_transition(M, num_classes, source)


__all__ += ["flip_targets"]
