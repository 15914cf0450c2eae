"""PNG plots of training curves (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_curves", "plot_weight_histograms", "plot_weight_function", "plot_alpha_beta"]


def _figure(ncols: int, width: float = 4.2, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height))
    return plt, fig, axes


def _finish(plt, fig, path: str | Path, *axes_labels: tuple[Any, str, str, bool], title: str = "",
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


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "",
                test_label: str = "test (clean)") -> None:
    """Training loss (left) and train/validation/test accuracy (right) per epoch; ``test_label``
    says what the test labels are (``test (clean)`` only with ground truth)."""
    plt, fig, (ax_loss, ax_acc) = _figure(2)
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [h.get(key) if h.get(key) is not None else float("nan") for h in history]

    ax_loss.plot(epochs, series("train_loss"), label="train loss")
    for key, label in (("train_accuracy", "train (observed labels)"), ("val_accuracy", "validation (noisy)"),
                       ("test_accuracy", test_label)):
        ax_acc.plot(epochs, series(key), label=label)
    _finish(plt, fig, path, (ax_loss, "epoch", "loss", True), (ax_acc, "epoch", "accuracy", True),
            title=title, suptitle=True)


def plot_weight_histograms(weights, is_noisy, path: str | Path, *, title: str = "", bins: int = 40) -> None:
    """Histograms of per-sample weights on clean versus corrupted training samples (``is_noisy``
    ``None``, no ground truth: one histogram of every training sample)."""
    import numpy as np

    w = np.asarray(weights, dtype=float)
    ok = np.isfinite(w)
    plt, fig, ax = _figure(1, width=5.0)
    edges = np.histogram_bin_edges(w[ok], bins=bins) if ok.any() else bins
    if is_noisy is None:
        ax.hist(w[ok], bins=edges, alpha=0.8, label=f"training samples ({int(ok.sum())}; no ground truth)")
    else:
        noisy = np.asarray(is_noisy, dtype=bool)
        ax.hist(w[ok & ~noisy], bins=edges, alpha=0.6, label=f"clean ({int((ok & ~noisy).sum())})")
        ax.hist(w[ok & noisy], bins=edges, alpha=0.6, label=f"corrupted ({int((ok & noisy).sum())})")
    _finish(plt, fig, path, (ax, "weight (mean over the epoch's visits)", "samples", True), title=title)


def plot_weight_function(losses, weights, path: str | Path, *, title: str = "",
                         xlabel: str = "per-sample cross-entropy loss", ylabel: str = "weight W(loss)") -> None:
    """A learned function of one input: MW-Net's weight against the loss, NARL's hyperparameter
    against the margin."""
    plt, fig, ax = _figure(1, width=5.0)
    ax.plot(losses, weights)
    _finish(plt, fig, path, (ax, xlabel, ylabel, False), title=title)


def plot_alpha_beta(alpha, beta, is_noisy, path: str | Path, *, title: str = "") -> None:
    """L2B: weight on the observed label (alpha) against weight on the pseudo-label (beta)."""
    import numpy as np

    a, b = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    plt, fig, ax = _figure(1, width=5.0, height=4.2)
    if is_noisy is None:  # no ground truth
        ax.scatter(a, b, s=4, alpha=0.5, label="training samples (no ground truth)")
    else:
        noisy = np.asarray(is_noisy, dtype=bool)
        ax.scatter(a[~noisy], b[~noisy], s=4, alpha=0.5, label="clean")
        ax.scatter(a[noisy], b[noisy], s=4, alpha=0.5, label="corrupted")
    _finish(plt, fig, path, (ax, "alpha (observed label)", "beta (pseudo-label)", True), title=title)
