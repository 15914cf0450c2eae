"""Issue 20, "Real human labels": CE vs EMLC / NARL / RMNW-Net and the cleaning path on CIFAR-10 JPEG
with the CIFAR-10N ``random1`` human labels (17% wrong), ResNet-8, one run at a time.

Usage (from the repo root, ``PYTHONPATH=$PWD/src``)::

    python3 benchmarks/realnoise_investigation.py run [--only NAME,...]   # train the configs in order
    python3 benchmarks/realnoise_investigation.py table                   # the table from the records
    python3 benchmarks/realnoise_investigation.py summary --seeds 0,1,2 --runs R  # mean ± std over seeds

The issue's setting (``runs/realnoise15``, every config of seed 0 first, then seeds 1 and 2)::

    python3 benchmarks/realnoise_investigation.py run --runs runs/realnoise15 --subset 10000 --test-subset 0 \
        --epochs 15 --seeds 0,1,2 --only ce,ce-9000,narl,emlc,mwnet-clean,rmnw-paper,rmnw-code,rmnw-sgd-sum,rmnw-adam-none

Each config is one ``noisylabels train`` run under ``--runs`` (default ``runs/realnoise``); a run whose
``summary.json`` says ``finished`` is not run again. The table reads ``summary.json``,
``metrics.jsonl`` and ``sample_records.npz`` of each run: best-validation / last / mean-of-last-5
test accuracy, the method's own detection AUROC (at the selected epoch) next to the selected
model's confidence AUROC, and the gate / adjuster / weight statistics per epoch (``--epochs-detail``).

The budget on this shared 2-core machine forced a reduced setting (the defaults here: 4000 images,
1000 of them the meta set for the meta methods, 1000 test images, 6 epochs; ``--epochs 3 --runs
runs/realnoise3`` for the EMLC pair); the issue's setting is ``--subset 10000 --test-subset 0
--epochs 15`` (a CE epoch of it took 62 s here, and each run shares the 2 cores with other jobs).
Findings: ``benchmarks/realnoise_findings.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = "/work/shared/data"
LABELS = f"{DATA}/cifar10n-random1.csv"
META = ["--set", "data.meta_size=1000"]
CLEAN_META = META + ["--set", "data.meta_set=clean"]

#: name -> (extra train arguments, what it tests)
CONFIGS: dict[str, tuple[list[str], str]] = {
    "ce": ([], "plain CE on the whole subset (no meta set)"),
    "ce-9000": (["--set", "data.train_subset=9000"],
                "CE on 9000 images: the meta methods' data less their 1000-image meta set (issue setting)"),
    "mwnet-clean": (["--method", "mwnet", *CLEAN_META], "MW-Net* (Adam, sum normalisation, CE meta loss, clean meta set)"),
    "narl": (["--method", "narl", *CLEAN_META], "A-GCE, defaults"),
    "emlc": (["--method", "emlc", *CLEAN_META], "EMLC, defaults (teacher lr 0.02)"),
    "rmnw-paper": (["--method", "rmnw-net", *META], "rmnw-net preset (SGD weight net, Eq. 2 unnormalised, noisy meta)"),
    "rmnw-code": (["--method", "rmnw-net", *META, "--set", "method.meta_optimizer=adam", "--set",
                   "method.normalize=sum"], "rmnw-net with MW-Net's code settings (Adam, sum normalisation)"),
    "emlc-lr0.1": (["--method", "emlc", *CLEAN_META, "--set", "method.meta_lr=0.1"], "EMLC, teacher lr 0.1 (CPU suites)"),
    "emlc-random": (["--method", "emlc", *CLEAN_META, "--set", "method.corruption=random"],
                    "EMLC, gate BCE with random (not adversarial) corruption"),
    "rmnw-sgd-sum": (["--method", "rmnw-net", *META, "--set", "method.normalize=sum"],
                     "rmnw-net: SGD weight net, sum normalisation"),
    "rmnw-adam-none": (["--method", "rmnw-net", *META, "--set", "method.meta_optimizer=adam"],
                       "rmnw-net: Adam weight net, Eq. 2 unnormalised"),
    "ce-3000": (["--set", "data.train_subset=3000"], "CE on 3000 images: the meta methods' student pool without the meta set"),
    "gce0.65": (["--loss", "gce", "--set", "loss.q=0.65"], "ERM with GCE at q = 0.65 (A-GCE's q at initialisation)"),
    "narl-metalr0.01": (["--method", "narl", *CLEAN_META, "--set", "method.meta_lr=0.01"], "A-GCE, meta lr 1e-2"),
    "ce-9000-w0.47": (["--set", "data.train_subset=9000", "--set", "optim.lr=0.047", "--set", "optim.weight_decay=1.064e-3"],
                      "CE on 9000 images with every weight 0.47 (rmnw-paper's mean weight): lr 0.1 x 0.47, wd 5e-4 / 0.47"),
}


def base_args(a: argparse.Namespace) -> list[str]:
    out = ["--dataset", "cifar10", "--data-dir", DATA, "--set", f"data.options.labels_csv={LABELS}",
           "--model", "resnet8", "--set", f"data.train_subset={a.subset}", "--epochs", str(a.epochs),
           "--set", "train.batch_size=128", "--set", f"train.num_threads={a.threads}", "--set", "train.progress=false",
           "--seed", str(a.seed)]
    if a.test_subset:
        out += ["--set", f"data.test_subset={a.test_subset}"]
    return out


def finished(run: Path) -> bool:
    try:
        return json.loads((run / "summary.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def seeds(a: argparse.Namespace) -> list[int]:
    return [int(s) for s in a.seeds.split(",")] if a.seeds else [a.seed]


def run_dir(a: argparse.Namespace, name: str, seed: int) -> Path:
    """``RUNS/NAME`` for one seed (``--seed``), ``RUNS/sSEED/NAME`` with ``--seeds``."""
    return Path(a.runs) / f"s{seed}" / name if a.seeds else Path(a.runs) / name


def cmd_run(a: argparse.Namespace) -> None:
    """Every config of seed 0 first (in ``--only``'s order), then seed 1, ..."""
    names = a.only.split(",") if a.only else list(CONFIGS)
    for seed in seeds(a):
        a.seed = seed
        for name in names:
            run = run_dir(a, name, seed)
            if finished(run):
                print(f"{name} seed {seed}: finished already", flush=True)
                continue
            cmd = [sys.executable, "-m", "noisylabels", "train", *base_args(a), *CONFIGS[name][0], "--out", str(run),
                   "--overwrite"]
            t0 = time.time()
            print(f"{name} seed {seed}: {' '.join(cmd[3:])}", flush=True)
            rc = subprocess.call(cmd)
            print(f"{name} seed {seed}: rc {rc}, {time.time() - t0:.0f} s", flush=True)


def _records(run: Path) -> dict[str, np.ndarray]:
    p = run / "sample_records.npz"
    if not p.is_file():
        return {}
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC (ties count one half), higher score = more likely positive."""
    from scipy.stats import rankdata

    ok = np.isfinite(score)
    s, y = score[ok], positive[ok]
    r = rankdata(s)
    n1, n0 = int(y.sum()), int((~y).sum())
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / max(1, n1 * n0))


def row(run: Path) -> dict[str, object] | None:
    if not (run / "summary.json").is_file():
        return None
    s = json.loads((run / "summary.json").read_text())
    m = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    out: dict[str, object] = {"status": s.get("status"), "best": s.get("test_accuracy"),
                              "last": s.get("last_test_accuracy"), "last5": s.get("last5_test_accuracy"),
                              "auroc": s.get("detection_auroc"), "conf_auroc": s.get("confidence_detection_auroc"),
                              "seconds": s.get("seconds_total"), "epochs": len(m), "noise": s.get("realized_noise_rate")}
    rec = _records(run)
    if rec:
        import csv

        with open(run / "labels.csv", newline="") as fh:
            lab = {int(r["index"]): (int(r["clean_label"]), int(r["observed_label"])) for r in csv.DictReader(fh)}
        idx = rec["index"]
        wrong = np.array([lab[int(i)][0] != lab[int(i)][1] for i in idx])
        e = int(s.get("best_epoch") or 0)
        k = list(rec["epochs"]).index(e) if e in rec["epochs"] else -1
        for name in ("gate", "q", "weight", "q_given", "margin"):
            if name in rec:
                v = rec[name][k]
                out[f"{name}_clean"] = float(np.nanmean(v[~wrong]))
                out[f"{name}_wrong"] = float(np.nanmean(v[wrong]))
                if name == "gate":
                    out["gate_trusted"] = float(np.nanmean(v > 0.5))
                    out["gate_trusted_wrong"] = float(np.nanmean(v[wrong] > 0.5))
                out[f"auroc_neg_{name}"] = _auroc(-v, wrong)
    for key in ("label_recovery_given_wrong",):
        if key in s:
            out[key] = s[key]
    return out


def record_epochs(run: Path) -> list[str]:
    """Per epoch, from ``sample_records.npz``: AUROC of minus each record for the wrong labels, the
    share of samples with margin < 0 and the wrong labels among them (NARL), the gate's share above
    1/2 and its Spearman correlation with the teacher's p(given) (EMLC; for runs recorded before
    ``teacher_p_given`` existed it is ``(q_given - gate) / (1 - gate)``, exact by Eq. 5)."""
    import csv

    from scipy.stats import spearmanr

    rec = _records(run)
    if not rec:
        return []
    with open(run / "labels.csv", newline="") as fh:
        lab = {int(r["index"]): r["clean_label"] != r["observed_label"] for r in csv.DictReader(fh)}
    wrong = np.array([lab[int(i)] for i in rec["index"]])
    lines = []
    for k, e in enumerate(rec["epochs"]):
        parts = [f"epoch {int(e)}:"]
        v = {n: rec[n][k] for n in rec if n not in ("epochs", "index") and rec[n].ndim == 2}
        if "gate" in v and "q_given" in v and "teacher_p_given" not in v:
            v["teacher_p_given"] = (v["q_given"] - v["gate"]) / np.clip(1 - v["gate"], 1e-6, None)
        for n, x in v.items():
            parts.append(f"AUROC(-{n}) {_auroc(-x, wrong):.3f}")
        if "margin" in v:
            low = v["margin"] < 0
            parts.append(f"margin<0 {low.mean():.2f} (wrong among them {wrong[low].mean():.3f})")
            if "q" in v:
                parts.append(f"corr(q, margin) {np.corrcoef(v['q'], v['margin'])[0, 1]:.2f}")
        if "gate" in v:
            parts.append(f"gate>1/2 {np.mean(v['gate'] > 0.5):.3f} (wrong {np.mean(v['gate'][wrong] > 0.5):.3f}), "
                         f"rho(gate, teacher p_given) {spearmanr(v['gate'], v['teacher_p_given'])[0]:.2f}")
        lines.append("    " + " ".join(parts))
    return lines


def cmd_table(a: argparse.Namespace) -> None:
    def pct(v: object) -> str:
        return "-" if v is None else f"{100 * float(v):.2f}"  # type: ignore[arg-type]

    print("| config | setting | best-val / last / last-5 test acc | method AUROC | confidence AUROC | stats | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (_, what) in CONFIGS.items():
        r = row(Path(a.runs) / name)
        if r is None:
            continue
        stats = ", ".join(f"{k} {v:.3f}" for k, v in r.items() if isinstance(v, float) and
                          k.split("_")[0] in ("gate", "q", "weight", "margin", "auroc", "label") and k != "auroc")
        auroc = "-" if r["auroc"] is None else f"{r['auroc']:.3f}"
        conf = "-" if r["conf_auroc"] is None else f"{r['conf_auroc']:.3f}"
        print(f"| {name} | {what} | {pct(r['best'])} / {pct(r['last'])} / {pct(r['last5'])} | {auroc} | {conf} | "
              f"{stats} | {r['seconds']:.0f} ({r['epochs']} ep, {r['status']}) |")
        if a.epochs_detail:
            m = [json.loads(x) for x in (Path(a.runs) / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
            keys = [k for k in m[0] if k.startswith(("mean_", "detection_auroc", "label_recovery_given_wrong"))]
            for row_ in m:
                vals = " ".join(f"{k}={row_.get(k):.3f}" for k in keys if isinstance(row_.get(k), float))
                print(f"    ep {row_['epoch']}: test {row_.get('test_accuracy', 0):.4f} {vals}")
            print("\n".join(record_epochs(Path(a.runs) / name)))


def _ms(vals: list[float], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` (sample std, as the bench harness) of the finite values, times ``scale``."""
    import statistics

    v = [scale * float(x) for x in vals if x is not None and np.isfinite(x)]
    if not v:
        return "-"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.{digits}f} ± {sd:.{digits}f}"


def _wrong_mask(run: Path, index: np.ndarray) -> np.ndarray:
    import csv

    with open(run / "labels.csv", newline="") as fh:
        lab = {int(r["index"]): r["clean_label"] != r["observed_label"] for r in csv.DictReader(fh)}
    return np.array([lab[int(i)] for i in index])


def cmd_summary(a: argparse.Namespace) -> None:
    """Mean ± std over ``--seeds`` per config: test accuracy (best-val / last / last-5), the detection
    AUROC the run reports (``detection_auroc``: its ranking score), the weight's own AUROC where
    there is one (``weight_detection_auroc``, from the records when the summary predates it) and the
    selected model's confidence AUROC; then, with ``--epochs-detail``, per epoch and config the mean
    test accuracy and, for the weighting runs, the mean weight on clean / wrong labels."""
    names = a.only.split(",") if a.only else list(CONFIGS)
    print("| config | setting | seeds | best-val test acc | last | last-5 | detection AUROC (ranking score) | "
          "AUROC(-weight) | confidence AUROC | s per run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    curves: dict[str, dict[int, list[dict[str, float]]]] = {}
    for name in names:
        cols: dict[str, list[float]] = {k: [] for k in ("best", "last", "last5", "auroc", "wauroc", "conf", "s")}
        done = 0
        for seed in seeds(a):
            run = run_dir(a, name, seed)
            if not finished(run):
                continue
            done += 1
            sm = json.loads((run / "summary.json").read_text())
            cols["best"].append(sm.get("test_accuracy"))
            cols["last"].append(sm.get("last_test_accuracy"))
            cols["last5"].append(sm.get("last5_test_accuracy"))
            cols["auroc"].append(sm.get("detection_auroc"))
            cols["conf"].append(sm.get("confidence_detection_auroc"))
            cols["s"].append(sm.get("seconds_total"))
            rec = _records(run)
            wrong = _wrong_mask(run, rec["index"]) if rec else None
            w = sm.get("weight_detection_auroc")
            if w is None and rec and "weight" in rec:
                e = int(sm.get("best_epoch") or 0)
                k = list(rec["epochs"]).index(e) if e in rec["epochs"] else -1
                w = _auroc(-rec["weight"][k], wrong)
            cols["wauroc"].append(w)
            m = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
            for row_ in m:
                e = int(row_["epoch"])
                c = {"test": row_.get("test_accuracy")}
                if rec and "weight" in rec and e in list(rec["epochs"]):
                    v = rec["weight"][list(rec["epochs"]).index(e)]
                    c.update(w_clean=float(np.nanmean(v[~wrong])), w_wrong=float(np.nanmean(v[wrong])),
                             w_all=float(np.nanmean(v)), w_auroc=_auroc(-v, wrong))
                curves.setdefault(name, {}).setdefault(e, []).append(c)
        if not done:
            continue
        secs = _ms(cols["s"], 1.0, 0)
        print(f"| {name} | {CONFIGS[name][1]} | {done} | {_ms(cols['best'])} | {_ms(cols['last'])} | "
              f"{_ms(cols['last5'])} | {_ms(cols['auroc'], 1, 3)} | {_ms(cols['wauroc'], 1, 3)} | "
              f"{_ms(cols['conf'], 1, 3)} | {secs} |")
    if not a.epochs_detail:
        return
    print("\nPer epoch, mean over the finished seeds: test accuracy (x100); weighting runs: mean weight on "
          "clean / wrong labels, mean weight over all (the factor on the student's step), AUROC(-weight)")
    for name, by_epoch in curves.items():
        parts = []
        for e in sorted(by_epoch):
            cs = by_epoch[e]
            t = np.mean([c["test"] for c in cs if c.get("test") is not None])
            txt = f"{int(e)}: {100 * t:.1f}"
            if "w_clean" in cs[0]:
                txt += (f" (w {np.mean([c['w_clean'] for c in cs]):.2f}/{np.mean([c['w_wrong'] for c in cs]):.2f}, "
                        f"all {np.mean([c['w_all'] for c in cs]):.2f}, AUROC {np.mean([c['w_auroc'] for c in cs]):.2f})")
            parts.append(txt)
        print(f"- {name}: " + "; ".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("run", "table", "summary"))
    p.add_argument("--runs", default="runs/realnoise")
    p.add_argument("--only", default="")
    p.add_argument("--subset", type=int, default=4000)
    p.add_argument("--test-subset", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default="", help="comma-separated seeds: runs go to RUNS/sSEED/NAME, seed-major order")
    p.add_argument("--epochs-detail", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="train.num_threads (runs/realnoise15 before ce-9000-w0.47: 2)")
    a = p.parse_args()
    {"run": cmd_run, "table": cmd_table, "summary": cmd_summary}[a.what](a)


if __name__ == "__main__":
    main()
