"""Where confident learning's noise estimate breaks down, as a function of the scoring models'
out-of-sample accuracy (issue 20: `detect` warns below the accuracy measured here).

Simulated noise on sklearn's digits (and MNIST-test from ``../shared/data/mnist-test`` when present):
symmetric 20% / 40% and pair 30%; the scoring models are 5-fold cross-fitted logistic regressions on
features with Gaussian noise of growing std added (weaker models), so each row of the table is one
(noise, model strength) pair. Printed: the models' out-of-sample accuracy against the true labels and
their agreement with the given labels (what `detect` can measure without ground truth), the realised
noise rate, confident learning's estimate (`estimate_noise`) and its relative error, and the
precision of the relabel suggestions (argmax) on the flagged samples.

Usage: ``PYTHONPATH=$PWD/src python3 benchmarks/cl_reliability.py [--mnist]``. Results:
``benchmarks/realnoise_findings.md``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from noisylabels.detect import estimate_noise, find_label_issues


def corrupt(y: np.ndarray, kind: str, rate: float, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = y.copy()
    flip = rng.random(len(y)) < rate
    if kind == "symmetric":  # to another class, uniformly
        out[flip] = (y[flip] + rng.integers(1, k, int(flip.sum()))) % k
    else:  # pair: y -> y + 1
        out[flip] = (y[flip] + 1) % k
    return out


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data / 16.0, d.target.astype(np.int64)
    from noisylabels.data import create_dataset

    raw = create_dataset("mnist", data_dir=Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist-test")
    x = np.concatenate([raw.x_train, raw.x_test]).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    y = np.concatenate([raw.y_train, raw.y_test]).astype(np.int64)
    from sklearn.decomposition import PCA

    return PCA(50, random_state=0).fit_transform(x), y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", action="store_true", help="also MNIST-test (PCA-50 features)")
    a = p.parse_args()
    rows = []
    for data in ["digits"] + (["mnist"] if a.mnist else []):
        x, y = load(data)
        k = int(y.max()) + 1
        scale = x.std()
        for kind, rate in (("symmetric", 0.2), ("symmetric", 0.4), ("pair", 0.3)):
            given = corrupt(y, kind, rate, k, seed=0)
            wrong = given != y
            for std in (0.0, 0.25, 0.5, 0.75, 1.0, 2.0, 4.0):
                rng = np.random.default_rng(1)
                xn = x + rng.normal(scale=std * scale, size=x.shape)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    probs = cross_val_predict(LogisticRegression(max_iter=300, C=0.1), xn, given,
                                              cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                              method="predict_proba")
                est = estimate_noise(given, probs).noise_rate
                issue = find_label_issues(given, probs)
                sug = probs.argmax(1)
                rows.append((data, f"{kind} {rate}", std, float((sug == y).mean()), float((sug == given).mean()),
                             float(wrong.mean()), est, (est - wrong.mean()) / wrong.mean(),
                             float((sug[issue] == y[issue]).mean()) if issue.any() else float("nan"),
                             float((wrong[issue]).mean()) if issue.any() else float("nan")))
    print("| data | noise | feature noise | acc (true) | agreement (given) | true rate | CL estimate | rel. error |"
          " flagged: argmax right | flagged: truly wrong |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.3f} | {r[7]:+.2f} | "
              f"{r[8]:.3f} | {r[9]:.3f} |")


if __name__ == "__main__":
    main()
