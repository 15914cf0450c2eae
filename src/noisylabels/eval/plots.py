"""PNG plots of training curves (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_curves"]


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
