"""PNG plots of training curves and of what methods learned (matplotlib, Agg backend).

Figures go through :func:`new_figure` and :func:`save_figure` (every plot of the package, also
``detect``'s joint). A method declares the curves it learned as :class:`Curve` values
(:meth:`noisylabels.methods.Method.curves`) and :func:`plot_curve` draws each; methods carry
no plotting code of their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Curve", "sample_function", "plot_curve", "plot_curves", "plot_weight_histograms", "new_figure", "save_figure"]


def new_figure(ncols: int, width: float = 4.2, height: float = 3.2) -> tuple[Any, Any, Any]:
    """``(pyplot, figure, axes)``: one row of ``ncols`` axes, each ``width x height`` inches (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height))
    return plt, fig, axes


def save_figure(plt: Any, fig: Any, path: str | Path, *axes_labels: tuple[Any, str, str, bool], title: str = "",
                suptitle: bool = False) -> None:
    """Label each ``(ax, xlabel, ylabel, legend)``, title the figure, save it as PNG and close it."""
    for ax, xlabel, ylabel, legend in axes_labels:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if legend:
            ax.legend()
    if title and suptitle:
        fig.suptitle(title)
    elif title:
        axes_labels[0][0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


@dataclass(frozen=True)
class Curve:
    """What a method learned, as ``y`` against ``x``, declared for a plot (``<name>.png``).

    Attributes
    ----------
    name:
        The file stem (``weight_function``, ``q_vs_margin``, ...).
    x, y:
        Equal-length 1-D sequences (numpy arrays, lists).
    xlabel, ylabel, title:
        The axes' labels and the title.
    per_sample:
        ``False``: a function (a line, e.g. MW-Net's ``W(loss)`` on a grid); ``True``: one point
        per training sample (a scatter, clean and corrupted samples apart when the run knows
        which, e.g. L2B's ``(alpha_i, beta_i)``).
    """

    name: str
    x: Any
    y: Any
    xlabel: str
    ylabel: str
    title: str = ""
    per_sample: bool = False


def sample_function(fn: Any, low: float, high: float, *, num: int = 201) -> tuple[Any, Any]:
    """``(x, fn(x))`` as numpy arrays on ``num`` evenly spaced points of ``[low, high]``: a learned
    function of one input (a module), evaluated without a graph on its parameters' device."""
    import torch

    grid = torch.linspace(low, high, num)
    with torch.no_grad():
        out = fn(grid.to(next(fn.parameters()).device)).cpu()
    return grid.numpy(), out.numpy()


def plot_curve(curve: Curve, path: str | Path, *, is_noisy: Any = None) -> None:
    """Draw a :class:`Curve` into ``path``: a line, or (``per_sample``) a scatter of the training
    samples, split into clean and corrupted by ``is_noisy`` (``None``: no ground truth, one colour)."""
    import numpy as np

    x, y = np.asarray(curve.x, dtype=float), np.asarray(curve.y, dtype=float)
    if not curve.per_sample:
        plt, fig, ax = new_figure(1, width=5.0)
        ax.plot(x, y)
        save_figure(plt, fig, path, (ax, curve.xlabel, curve.ylabel, False), title=curve.title)
        return
    plt, fig, ax = new_figure(1, width=5.0, height=4.2)
    if is_noisy is None:
        ax.scatter(x, y, s=4, alpha=0.5, label="training samples (no ground truth)")
    else:
        noisy = np.asarray(is_noisy, dtype=bool)
        ax.scatter(x[~noisy], y[~noisy], s=4, alpha=0.5, label="clean")
        ax.scatter(x[noisy], y[noisy], s=4, alpha=0.5, label="corrupted")
    save_figure(plt, fig, path, (ax, curve.xlabel, curve.ylabel, True), title=curve.title)


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "",
                test_label: str = "test (clean)") -> None:
    """Training loss (left) and train/validation/test accuracy (right) per epoch; ``test_label``
    says what the test labels are (``test (clean)`` only with ground truth)."""
    plt, fig, (ax_loss, ax_acc) = new_figure(2)
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [h.get(key) if h.get(key) is not None else float("nan") for h in history]

    ax_loss.plot(epochs, series("train_loss"), label="train loss")
    for key, label in (("train_accuracy", "train (observed labels)"), ("val_accuracy", "validation (noisy)"),
                       ("test_accuracy", test_label)):
        ax_acc.plot(epochs, series(key), label=label)
    save_figure(plt, fig, path, (ax_loss, "epoch", "loss", True), (ax_acc, "epoch", "accuracy", True),
            title=title, suptitle=True)


def plot_weight_histograms(weights, is_noisy, path: str | Path, *, title: str = "", bins: int = 40) -> None:
    """Histograms of per-sample weights on clean versus corrupted training samples (``is_noisy``
    ``None``, no ground truth: one histogram of every training sample)."""
    import numpy as np

    w = np.asarray(weights, dtype=float)
    ok = np.isfinite(w)
    plt, fig, ax = new_figure(1, width=5.0)
    edges = np.histogram_bin_edges(w[ok], bins=bins) if ok.any() else bins
    if is_noisy is None:
        ax.hist(w[ok], bins=edges, alpha=0.8, label=f"training samples ({int(ok.sum())}; no ground truth)")
    else:
        noisy = np.asarray(is_noisy, dtype=bool)
        ax.hist(w[ok & ~noisy], bins=edges, alpha=0.6, label=f"clean ({int((ok & ~noisy).sum())})")
        ax.hist(w[ok & noisy], bins=edges, alpha=0.6, label=f"corrupted ({int((ok & noisy).sum())})")
    save_figure(plt, fig, path, (ax, "weight (mean over the epoch's visits)", "samples", True), title=title)
