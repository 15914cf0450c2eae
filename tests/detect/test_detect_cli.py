"""`noisylabels detect` / `export` / `noise --csv` on a small folder of image files: every image
scored and named by its path, export -> retrain reads back exactly the labels written, and
bad inputs exit 2 with one line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from noisylabels.cli import main

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _photos(root, n=240, wrong=0.15, seed=0, flat=True):
    """A folder of digit images (flat, or ``train/<class>/``) and a ``path,label`` CSV whose
    labels are wrong for a fraction of the files; returns (folder, csv, {path: true name})."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(d.target), n, replace=False))
    folder = root / "photos"
    rows, truth = ["path,label"], {}
    for j, i in enumerate(keep):
        img = np.clip(np.round(d.images[i] * 255 / 16), 0, 255).astype(np.uint8)
        true = int(d.target[i])
        rel = f"img{j:04d}.png" if flat else f"train/{NAMES[true]}/img{j:04d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / rel)
        given = (true + 1) % 10 if rng.random() < wrong else true
        rows.append(f"{rel},{NAMES[given]}")
        truth[rel] = NAMES[true]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder, root / "labels.csv", truth


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _train(folder, labels, out, capsys, *extra):
    code, o, err = run(["train", "--quiet", "--dataset", "imagefolder", "--data-dir", folder, "--set",
                        f"data.options.labels_csv={labels}", "--noise", "none", "--noise-rate", "0", "--epochs", "4",
                        "--set", "train.num_threads=1", "--out", out, *extra], capsys)
    assert code == 0, err
    return o


@pytest.fixture
def photos_run(tmp_path, capsys, one_thread):
    folder, labels, truth = _photos(tmp_path)
    _train(folder, labels, tmp_path / "run", capsys)
    return tmp_path, folder, labels, truth


def test_flat_folder_every_image_scored_by_path(photos_run, capsys):
    tmp, folder, labels, truth = photos_run
    code, out, err = run(["detect", "--run", tmp / "run"], capsys)
    assert code == 0, err
    assert "estimated noise rate" in out and "most confused" in out
    issues = _rows(tmp / "run" / "label_issues.csv")
    assert sorted(r["path"] for r in issues) == sorted(truth)  # every file once: train, val and carved test
    assert {r["split"] for r in issues} == {"train", "val", "test"}
    assert [int(r["rank"]) for r in issues] == list(range(len(issues)))
    q = [float(r["quality_score"]) for r in issues]
    assert q == sorted(q)
    assert (tmp / "run" / "joint.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = json.loads((tmp / "run" / "detect_summary.json").read_text())
    assert s["num_samples"] == len(truth) and 0 < s["num_flagged"] < len(truth)
    # suspects.csv and labels.csv name the files too
    assert all(r["path"] in truth for r in _rows(tmp / "run" / "suspects.csv"))
    assert all(r["path"] in truth for r in _rows(tmp / "run" / "labels.csv"))


@pytest.mark.parametrize("mode", ["--relabel", "--drop-issues"])
def test_export_then_retrain_reads_back_exactly_the_labels_written(photos_run, mode, capsys):
    tmp, folder, labels, truth = photos_run
    clean = tmp / "clean.csv"
    extra = ["--min-confidence", "0.3"] if mode == "--relabel" else []
    code, out, err = run(["export", "--run", tmp / "run", mode, *extra, "--out", clean], capsys)
    assert code == 0, err
    written = {r["path"]: r["label"] for r in _rows(clean)}
    flagged = {r["path"] for r in _rows(tmp / "run" / "label_issues.csv") if r["is_label_issue"] == "1"}
    if mode == "--drop-issues":
        assert set(written) == set(truth) - flagged
    else:
        assert set(written) <= set(truth) and any(r["action"] == "relabel" for r in _rows(clean))
    _train(folder, clean, tmp / "retrain", capsys)
    classes = json.loads((tmp / "retrain" / "pred_probs.json").read_text())["classes"]
    back = {r["path"]: classes[int(r["observed_label"])] for r in _rows(tmp / "retrain" / "labels.csv")}
    assert back == written


def test_export_unsupported_flagged_samples_keep_their_given_label_or_are_left_out(photos_run, capsys):
    """Issue 20: ``--unsupported keep`` (the default) writes a flagged sample whose suggestion is not
    supported under its given label (action ``keep_flagged``), ``drop`` leaves it out; the relabels
    are the same either way, and which rows are unsupported follows the printed rule."""
    tmp, folder, labels, truth = photos_run
    given = {r["path"]: r["label"] for r in _rows(labels)}
    out = {}
    for how in ("keep", "drop", None):
        dest = tmp / f"clean-{how}.csv"
        code, o, err = run(["export", "--run", tmp / "run", "--relabel", "--min-confidence", "0.6", "--out", dest,
                            *(["--unsupported", how] if how else [])], capsys)
        assert code == 0, err
        out[how] = {r["path"]: r for r in _rows(dest)}
    issues = {r["path"]: r for r in _rows(tmp / "run" / "label_issues.csv")}  # the detection export ran
    flagged = {q for q, r in issues.items() if r["is_label_issue"] == "1"}
    keep, drop = out["keep"], out["drop"]
    assert {q: r["label"] for q, r in out[None].items()} == {q: r["label"] for q, r in keep.items()}  # the default
    relabelled = {q for q, r in keep.items() if r["action"] == "relabel"}
    unsupported = {q for q, r in keep.items() if r["action"] == "keep_flagged"}
    assert relabelled and unsupported and relabelled | unsupported == flagged
    assert set(keep) == set(truth)  # nothing left out
    assert all(keep[q]["label"] == given[q] for q in unsupported)
    assert all(keep[q]["label"] == issues[q]["suggested_name"] != given[q] for q in relabelled)
    assert set(drop) == set(truth) - unsupported
    assert {q: r["label"] for q, r in drop.items()} == {q: keep[q]["label"] for q in drop}
    probs = np.load(tmp / "run" / "pred_probs.npy")
    row = {r["path"]: k for k, r in enumerate(_rows(tmp / "run" / "labels.csv"))}
    classes = json.loads((tmp / "run" / "pred_probs.json").read_text())["classes"]
    for q in unsupported:  # below 0.6, or a class the models get wrong at least as often as right
        p = probs[row[q]]
        assert p.max() < 0.6 or "refused" in o and classes[int(p.argmax())] in o.split("(precision <= 1/2): ")[1]
    code, _, err = run(["export", "--run", tmp / "run", "--drop-issues", "--unsupported", "keep",
                        "--out", tmp / "x.csv"], capsys)
    assert code == 2 and "--unsupported goes with --relabel" in err


def test_detect_from_labels_and_pred_probs_files(photos_run, capsys):
    tmp, *_ = photos_run
    probs = tmp / "run" / "pred_probs.npy"
    code, out, err = run(["detect", "--labels", tmp / "run" / "labels.csv", "--pred-probs", probs,
                          "--out", tmp / "d1"], capsys)
    assert code == 0, err
    rows = _rows(tmp / "d1" / "label_issues.csv")
    assert len(rows) == len(np.load(probs)) and all(r["path"] for r in rows)
    # a path,label CSV with class names, aligned with the rows, and the names in column order
    classes = json.loads((tmp / "run" / "pred_probs.json").read_text())["classes"]
    lab = {r["index"]: r for r in _rows(tmp / "run" / "labels.csv")}
    lines = ["path,label"] + [f"{lab[str(i)]['path']},{classes[int(lab[str(i)]['observed_label'])]}"
                              for i in range(len(lab))]
    (tmp / "named.csv").write_text("\n".join(lines) + "\n")
    code, out, err = run(["detect", "--labels", tmp / "named.csv", "--pred-probs", probs, "--classes",
                          ",".join(classes), "--out", tmp / "d2", "--filter-by", "both"], capsys)
    assert code == 0, err
    a = {r["path"]: r["is_label_issue"] for r in _rows(tmp / "d2" / "label_issues.csv")}
    assert len(a) == len(rows)


def test_noise_csv_is_a_labels_csv(tmp_path, capsys, one_thread):
    folder, _, truth = _photos(tmp_path, n=120, wrong=0.0, flat=False)
    out_csv = tmp_path / "noisy.csv"
    code, out, err = run(["noise", "--dataset", "imagefolder", "--data-dir", folder, "--noise", "symmetric",
                          "--rate", "0.3", "--csv", out_csv], capsys)
    assert code == 0, err
    rows = _rows(out_csv)
    assert list(rows[0])[:2] == ["path", "label"] and len(rows) == len(truth)
    assert sum(r["label"] != r["clean_label"] for r in rows) > 10
    _train(folder, out_csv, tmp_path / "r", capsys)
    back = json.loads((tmp_path / "r" / "pred_probs.json").read_text())["classes"]
    lab = _rows(tmp_path / "r" / "labels.csv")
    got = {r["path"]: back[int(r["observed_label"])] for r in lab if r["split"] != "test"}
    want = {r["path"]: r["label"] for r in rows}
    assert got == {p: want[p] for p in got} and len(got) > 80
    # a test split carved from class folders is scored against the folders (the ground truth)
    assert all(back[int(r["observed_label"])] == truth[r["path"]] for r in lab if r["split"] == "test")
    # the class-folder tree gives the folders as clean labels: is_noisy marks the simulated flips
    assert all((r["is_noisy"] == "1") == (want[r["path"]] != truth[r["path"]]) for r in lab if r["split"] != "test")


def _bad_cases(tmp):
    probs = np.full((5, 3), 1 / 3)
    np.save(tmp / "p.npy", probs)
    np.save(tmp / "p_bad.npy", probs * 0.5)
    np.save(tmp / "p_obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp / "y.csv").write_text("label\n0\n1\n2\n0\n1\n")
    (tmp / "y4.csv").write_text("label\n0\n1\n2\n0\n")
    (tmp / "yname.csv").write_text("path,label\na.png,cat\nb.png,dog\nc.png,cow\nd.png,cat\ne.png,emu\n")
    (tmp / "y9.csv").write_text("label\n0\n1\n9\n0\n1\n")
    (tmp / "empty").mkdir()
    return {
        "no source": (["detect"], "--run"),
        "missing run": (["detect", "--run", tmp / "nope"], "does not exist"),
        "not a run": (["detect", "--run", tmp / "empty"], "labels.csv"),
        "labels without probs": (["detect", "--labels", tmp / "y.csv"], "--pred-probs"),
        "missing probs": (["detect", "--labels", tmp / "y.csv", "--pred-probs", tmp / "no.npy"], "not found"),
        "pickled probs": (["detect", "--labels", tmp / "y.csv", "--pred-probs", tmp / "p_obj.npy"], "no pickles"),
        "rows mismatch": (["detect", "--labels", tmp / "y4.csv", "--pred-probs", tmp / "p.npy"], "4 labels"),
        "probs not summing": (["detect", "--labels", tmp / "y.csv", "--pred-probs", tmp / "p_bad.npy"], "sum to 1"),
        "label out of range": (["detect", "--labels", tmp / "y9.csv", "--pred-probs", tmp / "p.npy"], "outside"),
        "names vs columns": (["detect", "--labels", tmp / "yname.csv", "--pred-probs", tmp / "p.npy"], "--classes"),
        "unknown name": (["detect", "--labels", tmp / "yname.csv", "--pred-probs", tmp / "p.npy",
                          "--classes", "cat,dog,cow"], "emu"),
        "export missing run": (["export", "--run", tmp / "nope", "--drop-issues", "--out", tmp / "o.csv"],
                               "does not exist"),
    }


BAD = ["no source", "missing run", "not a run", "labels without probs", "missing probs", "pickled probs",
       "rows mismatch", "probs not summing", "label out of range", "names vs columns", "unknown name",
       "export missing run"]


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_exit_2_with_one_line(case, tmp_path, capsys):
    argv, expect = _bad_cases(tmp_path)[case]
    code, out, err = run(argv, capsys)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("noisylabels: error:"), err
    assert expect in lines[0], lines[0]


def test_export_refuses_runs_without_files_and_bad_options(tmp_path, capsys, one_thread):
    code, _, err = run(["train", "--quiet", "--epochs", "1", "--out", tmp_path / "d", "--set",
                        "train.num_threads=1"], capsys)
    assert code == 0, err
    code, _, err = run(["export", "--run", tmp_path / "d", "--relabel", "--out", tmp_path / "o.csv"], capsys)
    assert code == 2 and "no file paths" in err
    code, _, err = run(["export", "--run", tmp_path / "d", "--drop-issues", "--min-confidence", "0.5",
                        "--out", tmp_path / "o.csv"], capsys)
    assert code == 2 and "--relabel" in err


def test_zip_source_paths_in_every_record(tmp_path, capsys, one_thread):
    import shutil

    folder, _, truth = _photos(tmp_path, n=100, wrong=0.0, flat=False)
    archive = shutil.make_archive(str(tmp_path / "photos"), "zip", root_dir=folder)
    code, out, err = run(["train", "--quiet", "--dataset", "imagefolder", "--set", f"data.options.path={archive}",
                          "--epochs", "2", "--set", "train.num_threads=1", "--out", tmp_path / "z"], capsys)
    assert code == 0, err
    for name in ("labels.csv", "suspects.csv"):
        assert {r["path"] for r in _rows(tmp_path / "z" / name)} <= set(truth), name
    assert len(_rows(tmp_path / "z" / "labels.csv")) == len(truth)
    code, out, err = run(["detect", "--run", tmp_path / "z"], capsys)
    assert code == 0, err
    assert "paths are relative to" in out and archive in out
    assert {r["path"] for r in _rows(tmp_path / "z" / "label_issues.csv")} == set(truth)
