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


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "") -> None:
    """Training loss (left) and train/validation/test accuracy (right) per epoch."""
    plt, fig, (ax_loss, ax_acc) = _figure(2)
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [h.get(key) if h.get(key) is not None else float("nan") for h in history]

    ax_loss.plot(epochs, series("train_loss"), label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    for key, label in (("train_accuracy", "train (observed labels)"), ("val_accuracy", "validation (noisy)"),
                       ("test_accuracy", "test (clean)")):
        ax_acc.plot(epochs, series(key), label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def plot_weight_histograms(weights, is_noisy, path: str | Path, *, title: str = "", bins: int = 40) -> None:
    """Histograms of per-sample weights on clean versus corrupted training samples."""
    import numpy as np

    w = np.asarray(weights, dtype=float)
    noisy = np.asarray(is_noisy, dtype=bool)
    ok = np.isfinite(w)
    plt, fig, ax = _figure(1, width=5.0)
    edges = np.histogram_bin_edges(w[ok], bins=bins) if ok.any() else bins
    ax.hist(w[ok & ~noisy], bins=edges, alpha=0.6, label=f"clean ({int((ok & ~noisy).sum())})")
    ax.hist(w[ok & noisy], bins=edges, alpha=0.6, label=f"corrupted ({int((ok & noisy).sum())})")
    ax.set_xlabel("weight (mean over the epoch's visits)")
    ax.set_ylabel("samples")
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def plot_weight_function(losses, weights, path: str | Path, *, title: str = "") -> None:
    """The learned weighting function: weight against training loss (Meta-Weight-Net)."""
    plt, fig, ax = _figure(1, width=5.0)
    ax.plot(losses, weights)
    ax.set_xlabel("per-sample cross-entropy loss")
    ax.set_ylabel("weight W(loss)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def plot_alpha_beta(alpha, beta, is_noisy, path: str | Path, *, title: str = "") -> None:
    """L2B: weight on the observed label (alpha) against weight on the pseudo-label (beta)."""
    import numpy as np

    a, b = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    noisy = np.asarray(is_noisy, dtype=bool)
    plt, fig, ax = _figure(1, width=5.0, height=4.2)
    ax.scatter(a[~noisy], b[~noisy], s=4, alpha=0.5, label="clean")
    ax.scatter(a[noisy], b[noisy], s=4, alpha=0.5, label="corrupted")
    ax.set_xlabel("alpha (observed label)")
    ax.set_ylabel("beta (pseudo-label)")
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
