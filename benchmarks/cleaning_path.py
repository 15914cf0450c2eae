"""The practitioner's cleaning path of issue 20, before and after the evidence-based relabel rule:
``train --folds 5`` -> ``detect`` -> ``export --relabel`` -> retrain, against CE on the given labels.

Two settings:

* ``digits`` (cheap): sklearn's digits as an image tree (``train/<class>/``, ``test/<class>/``), a
  ``path,label`` CSV with simulated noise (``--noise symmetric|pair``, ``--rate``), MLP scoring models
  trained ``--epochs`` epochs (few epochs = weak scoring models);
* ``cifar``: the real-label setting of ``benchmarks/realnoise_investigation.py`` (CIFAR-10 JPEG,
  CIFAR-10N random1, ResNet-8, ``--subset``, ``--test-subset``, ``--epochs``).

Printed per variant: the noise estimate vs the truth, rows written, labels changed, wrong labels
left among the written rows, and the retrained model's test accuracy (mean ± std over
``--retrain-seeds``). ``old`` relabels every flagged sample to its suggestion (the rule before issue
20); ``relabel-keep`` / ``relabel-drop`` are ``export --relabel`` (calibrated threshold, no class the
scoring models get wrong more often than right) with the flagged samples whose suggestion is not
supported kept under their given label (``--unsupported keep``) or left out (``--unsupported
drop``); ``drop`` is ``export --drop-issues``.

Usage: ``PYTHONPATH=$PWD/src python3 benchmarks/cleaning_path.py digits --epochs 3 --out /tmp/cp``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def digits_tree(root: Path, *, noise: str, rate: float, seed: int = 0) -> tuple[Path, Path]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    test = rng.random(len(d.target)) < 0.25
    rows = ["path,label"]
    for j, (img, true) in enumerate(zip(d.images, d.target)):
        split = "test" if test[j] else "train"
        rel = f"{split}/{NAMES[true]}/img{j:04d}.png"
        (root / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(np.round(img * 255 / 16), 0, 255).astype(np.uint8)).save(root / "tree" / rel)
        if split == "train":
            given = int(true)
            if rng.random() < rate:
                given = (true + 1) % 10 if noise == "pair" else (true + int(rng.integers(1, 10))) % 10
            rows.append(f"{rel},{NAMES[given]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "tree", root / "labels.csv"


def nl(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "noisylabels", *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"noisylabels {' '.join(args[:3])} ...: {out.stderr.strip()}")
    return out.stdout


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("setting", choices=("digits", "cifar"))
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--noise", default="symmetric")
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--subset", type=int, default=4000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--retrain-seeds", default="0", help="comma-separated seeds of the retrains")
    p.add_argument("--seed", type=int, default=0, help="seed of the digits noise and of the cross-fit")
    a = p.parse_args()
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    common = ["--epochs", str(a.epochs), "--set", f"train.num_threads={a.threads}", "--set", "train.progress=false",
              "--overwrite"]
    if a.setting == "digits":
        tree, labels = digits_tree(root, noise=a.noise, rate=a.rate, seed=a.seed)
        data = ["--dataset", "imagefolder", "--data-dir", str(tree), "--noise", "none", "--noise-rate", "0"]
        with_labels = lambda f: [*data, "--set", f"data.options.labels_csv={f}"]  # noqa: E731
        subset: list[str] = []
    else:
        d = "/work/shared/data"
        labels = Path(f"{d}/cifar10n-random1.csv")
        data = ["--dataset", "cifar10", "--data-dir", d, "--model", "resnet8", "--set", "train.batch_size=128",
                "--set", f"data.test_subset={a.test_subset}"]
        with_labels = lambda f: [*data, "--set", f"data.options.labels_csv={f}"]  # noqa: E731
        subset = ["--set", f"data.train_subset={a.subset}"]
    cf = root / "cf"
    nl("train", *with_labels(labels), *subset, *common, "--seed", str(a.seed), "--folds", "5", "--out", str(cf))
    det = nl("detect", "--run", str(cf))
    summ = json.loads((cf / "detect_summary.json").read_text())
    lab = read_rows(cf / "labels.csv")
    truth = {r["path"]: int(r["clean_label"]) for r in lab}
    pool = [r for r in lab if r["split"] != "test"]
    true_rate = float(np.mean([r["clean_label"] != r["observed_label"] for r in pool]))
    classes = json.loads((cf / "pred_probs.json").read_text())["classes"]
    # old rule: every flagged sample to its suggestion
    issues = {r["path"]: r for r in read_rows(cf / "label_issues.csv")}
    old = ["path,label"] + [f"{r['path']},{issues[r['path']]['suggested_name'] if issues[r['path']]['is_label_issue'] == '1' else classes[int(r['observed_label'])]}"
                            for r in pool]
    (root / "old.csv").write_text("\n".join(old) + "\n")
    msg_keep = nl("export", "--run", str(cf), "--relabel", "--unsupported", "keep", "--out", str(root / "relabel-keep.csv"))
    msg_drop = nl("export", "--run", str(cf), "--relabel", "--unsupported", "drop", "--out", str(root / "relabel-drop.csv"))
    nl("export", "--run", str(cf), "--drop-issues", "--out", str(root / "drop.csv"))
    print(det)
    print(msg_keep)
    print(msg_drop)
    given = {r["path"]: int(r["observed_label"]) for r in pool}
    print(f"noise estimate {100 * summ['estimated_noise_rate']:.1f}% vs truth {100 * true_rate:.1f}% on the pool; "
          f"scoring models' accuracy {100 * (summ.get('scoring_accuracy') or float('nan')):.1f}% "
          f"({summ.get('scoring_accuracy_on')})")
    seeds = [int(x) for x in a.retrain_seeds.split(",")]
    print(f"| variant | rows | labels changed | wrong labels left | retrained test acc: best-val / last "
          f"(mean ± std over {len(seeds)} seed(s)) | per seed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("given", "old", "relabel-keep", "relabel-drop", "drop"):
        f = labels if name == "given" else root / f"{name}.csv"
        rows = [r for r in read_rows(f) if r["path"] in given] if name != "given" else \
            [{"path": r["path"], "label": classes[int(r["observed_label"])]} for r in pool]
        lab_of = {r["path"]: classes.index(r["label"]) for r in rows}
        changed = sum(lab_of[q] != given[q] for q in lab_of)
        wrong = sum(lab_of[q] != truth[q] for q in lab_of)
        extra = subset if name == "given" else []
        best, last = [], []
        for seed in seeds:
            run = root / f"retrain-{name}-s{seed}"
            nl("train", *with_labels(f), *extra, *common, "--seed", str(seed), "--out", str(run))
            acc = json.loads((run / "summary.json").read_text())
            best.append(100 * acc["test_accuracy"])
            last.append(100 * acc["last_test_accuracy"])
        per = " ; ".join(f"{b:.2f} / {la:.2f}" for b, la in zip(best, last))
        print(f"| {name} | {len(rows)} | {changed} ({100 * changed / len(rows):.1f}%) | {wrong} "
              f"({100 * wrong / len(rows):.1f}%) | {np.mean(best):.2f} ± {np.std(best):.2f} / "
              f"{np.mean(last):.2f} ± {np.std(last):.2f} | {per} |", flush=True)


if __name__ == "__main__":
    main()
