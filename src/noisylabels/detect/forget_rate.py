"""The forget rate of small-loss methods (Co-teaching's tau) estimated from a cross-fitted warm-up.

Co-teaching and Co-teaching+ set tau to the noise rate, which their papers assume known. On labels
whose noise rate nobody knows (human labels, a user's data), :func:`estimate_forget_rate` trains a
short cross-fit with plain training (``erm`` on the run's loss, model, optimiser and data,
:func:`noisylabels.detect.crossfit.crossfit`) and returns confident learning's noise rate
(:func:`noisylabels.detect.estimate_noise`, Northcutt et al. 2021: ``1 - trace`` of the calibrated
joint of given and true labels) of the training split's out-of-sample probabilities.
:func:`resolve_forget_rate` is the hook :func:`noisylabels.train.fit` takes (``resolve=``): for a
method whose ``forget_rate`` is ``estimate`` it runs that warm-up into the run's folder
(``forget-rate-estimate/``, a nested run that belongs to the run) and returns the config with the
number, which the run then records (``config.yaml``, ``summary.json``: ``tau``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..train.prepare import RunData

__all__ = ["estimate_forget_rate", "resolve_forget_rate", "ESTIMATE_FOLDER"]

#: the nested run of the warm-up inside the run's folder
ESTIMATE_FOLDER = "forget-rate-estimate"


def estimate_forget_rate(cfg: dict[str, Any], *, out: str | Path, folds: int = 2, epochs: int | None = None,
                         data: RunData | None = None, progress: Any = False, overwrite: bool = True) -> float:
    """Confident learning's noise rate of ``cfg``'s training split from a cross-fitted plain warm-up.

    Parameters
    ----------
    cfg:
        The run's config (its data, noise, model, loss, optimiser and seed are used; its method is
        replaced by ``erm``).
    out:
        Where the warm-up's cross-fit writes (``fold-<k>/``, ``pred_probs.npy``, ``label_issues.csv``).
    folds:
        Folds of the cross-fit (>= 2; each model trains on ``(folds - 1) / folds`` of the split).
    epochs:
        Epochs of each fold (default: half of ``cfg``'s epochs, at least 1); each fold's model is
        the best-validation epoch, as in any run.
    data:
        The run's built data (default: built from ``cfg``).
    progress, overwrite:
        As :func:`noisylabels.detect.crossfit.crossfit`.

    Returns
    -------
    float
        The estimated fraction of wrong labels in the training split, in [0, 1].
    """
    from .crossfit import crossfit

    warm = copy.deepcopy(cfg)
    warm["method"] = {"name": "erm"}
    warm["train"]["epochs"] = int(epochs) if epochs is not None else max(1, int(cfg["train"]["epochs"]) // 2)
    warm["out"] = str(out)
    summary = crossfit(warm, folds=int(folds), progress=bool(progress), data=data, overwrite=overwrite)
    return float(summary["estimated_noise_rate_train"])


def resolve_forget_rate(cfg: dict[str, Any], data: RunData | None = None, progress: Any = False) -> dict[str, Any]:
    """``cfg`` with ``method.forget_rate: estimate`` replaced by :func:`estimate_forget_rate`'s number
    (the warm-up into ``<out>/forget-rate-estimate``, with the method's ``estimate_folds`` and
    ``estimate_epochs``); any other config is returned unchanged. The hook
    :func:`noisylabels.train.fit` takes (``fit(cfg, resolve=resolve_forget_rate)``). Called again for a
    resumed run, it reuses the run's finished warm-up (the same number, no training)."""
    if cfg.get("method", {}).get("forget_rate") != "estimate":
        return cfg
    mcfg = cfg["method"]
    # overwrite=False: a new run's folder holds no warm-up (fit cleared it); a resumed run finds its
    # own finished warm-up (the same config) and gets the same number back without training again
    rate = estimate_forget_rate(cfg, out=Path(cfg["out"]) / ESTIMATE_FOLDER, folds=int(mcfg.get("estimate_folds", 2)),
                                epochs=mcfg.get("estimate_epochs"), data=data, progress=progress, overwrite=False)
    out = copy.deepcopy(cfg)
    out["method"]["forget_rate"] = min(max(rate, 0.0), 0.99)
    if progress:
        print(f"forget rate: {out['method']['forget_rate']:.4f}, estimated by a {mcfg.get('estimate_folds', 2)}-fold "
              f"warm-up ({Path(cfg['out']) / ESTIMATE_FOLDER})", flush=True)
    return out
