"""Issue 20: does a weighting method's ``-weight`` rank the wrong labels first in every run?

For each method, noise and meta-set kind, trains a few short digits runs and prints, at the selected
epoch, the AUROC for the corrupted labels of ``-weight`` (L2RW's weight, L2B's alpha; the MW-Net
family's weight: the WACV paper's Table 3 metric; ``weight_detection_auroc`` / ``alpha_...``) and of
the score the run ranks by (``detection_auroc``: each sample's CE at its step since issue 20). An
AUROC below 0.5 means the score ranks the wrong labels *last*. Default meta set: 10% of the pool.

L2RW / L2B weights are the rectified meta-gradients of each sample's loss (Ren et al. 2018, Eq. 12):
the alignment of its gradient with the meta set's, with no learned function whose slope could come
out either way. MW-Net's weight is a learned function of the loss, whose direction the meta step
does not fix. Usage::

    python3 benchmarks/weight_score_direction.py [--epochs 3] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from noisylabels.config import resolve_config
from noisylabels.train import fit

__all__ = ["main"]

#: name -> (options, meta-set kinds it runs with, its weight record)
METHODS = {
    "l2rw": ({"method.name": "l2rw"}, ("clean", "noisy"), "weight"),
    "l2b": ({"method.name": "l2b"}, ("clean", "noisy"), "alpha"),
    "mwnet (Adam, sum)": ({"method.name": "mwnet"}, ("clean", "noisy"), "weight"),
    "mwnet (Adam, none)": ({"method.name": "mwnet", "method.normalize": "none"}, ("clean", "noisy"), "weight"),
    "rmnw-net (SGD, none)": ({"method.name": "rmnw-net-paper"}, ("noisy",), "weight"),
}
NOISES = {"uniform 0.4": {"noise.type": "uniform", "noise.rate": 0.4},
          "flip 0.3": {"noise.type": "flip", "noise.rate": 0.3}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    print("| method | noise | meta set | AUROC(-weight) per seed | AUROC(ranking score) per seed |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for mname, (mset, kinds, record) in METHODS.items():
            for nname, nset in NOISES.items():
                for kind in kinds:
                    w, r = [], []
                    for seed in a.seeds:
                        s = fit(resolve_config(overrides={
                            "out": str(Path(tmp) / "run"), "seed": seed, "train.progress": False,
                            "train.epochs": a.epochs, "train.num_threads": 1, "data.meta_set": kind, **nset, **mset}),
                            overwrite=True)
                        w.append(s[f"{record}_detection_auroc"])
                        r.append(s["detection_auroc"])
                    print(f"| {mname} | {nname} | {kind} | {' / '.join(f'{v:.3f}' for v in w)} | "
                          f"{' / '.join(f'{v:.3f}' for v in r)} |", flush=True)


if __name__ == "__main__":
    main()
