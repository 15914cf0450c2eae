"""Every command of the README's ```bash blocks: each parses with the CLI's argparser (fast), and
the whole sequence runs in order, as written, on small data (slow). Small data means a few added
flags (one epoch, a 300-sample pool; three epochs for narl-train, whose snapshots need thirds; one
seed and in-process runs for a bench); skipped are only the installs and what needs a GPU."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from noisylabels.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"

#: what is not run, and why (matched against the command text)
SKIPS = {"pip install": "installs packages", "python3 -m pytest": "the test suite itself",
         "device=cuda": "needs a GPU",
         "benchmarks/gpu_check.py": "needs a GPU and CIFAR-10 (rehearsed on CPU by tests/bench/test_gpu_check.py)"}


def readme_commands() -> list[tuple[int, str]]:
    """``(block number, command)`` for every command of every ```bash block, in order
    (continuation lines joined, ``a && b`` split, comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    out = []
    for b, block in enumerate(blocks):
        text = re.sub(r"\\\n", " ", block)
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                out.append((b, shlex.join(words[:cut])))
                words = words[cut + 1:]
    return out


def _skip_reason(cmd: str) -> str | None:
    return next((why for needle, why in SKIPS.items() if needle in cmd), None)


def test_readme_has_commands():
    cmds = readme_commands()
    assert len(cmds) > 20 and all(c.split()[0] in ("noisylabels", "pip", "python3") for _, c in cmds), cmds


@pytest.mark.parametrize("cmd", [c for _, c in readme_commands() if c.startswith("noisylabels")])
def test_every_readme_command_parses(cmd):
    argv = shlex.split(cmd)[1:]
    if ">" in argv:
        argv = argv[: argv.index(">")]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's exit on a bad flag
        pytest.fail(f"README command does not parse ({exc.code}): {cmd}")
    assert args.command is not None


def _small(argv: list[str]) -> list[str]:
    """The command on small data: the same flags, plus a smaller size."""
    cmd = argv[0]
    if cmd in ("train", "narl-train"):
        argv = list(argv)
        if "--meta-size" in argv:  # a meta set that fits a 300-sample pool
            argv[argv.index("--meta-size") + 1] = "50"
        epochs = "3" if cmd == "narl-train" else "1"
        return [*argv, "--epochs", epochs, "--set", "data.train_subset=300", "--quiet"]
    if cmd == "pretrain":
        return [*argv, "--epochs", "1", "--batch-size", "64", "--quiet"]
    if cmd == "bench":
        return [*argv, "--seeds", "1", "--set", "train.epochs=1", "--set", "data.train_subset=300",
                "--executor", "inline"]
    return argv


def _photos(root: Path, n: int = 400, wrong: float = 0.2, seed: int = 0) -> None:
    """The README's example data: ``photos/`` (flat, ``n`` digit images) and ``labels.csv``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rows = ["path,label"]
    (root / "photos").mkdir()
    for j, i in enumerate(rng.choice(len(d.target), n, replace=False)):
        Image.fromarray(np.clip(np.round(d.images[i] * 255 / 16), 0, 255).astype(np.uint8)).save(
            root / "photos" / f"img{j:04d}.png")
        given = (int(d.target[i]) + 1) % 10 if rng.random() < wrong else int(d.target[i])
        rows.append(f"img{j:04d}.png,{names[given]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_readme_command_sequence_runs_as_written(tmp_path, monkeypatch, capsys):
    if not (SHARED / "data" / "mnist-test").is_dir():
        pytest.skip("../shared/data/mnist-test (the README's MNIST) not present")
    work = tmp_path / "project"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)  # the README's ../shared/data beside the project
    _photos(work)
    monkeypatch.chdir(work)
    monkeypatch.delenv("NOISYLABELS_DATA_DIR", raising=False)
    ran, skipped = [], []
    for _, cmd in readme_commands():
        why = _skip_reason(cmd)
        if why:
            skipped.append((cmd, why))
            continue
        argv = shlex.split(cmd)[1:]
        target = None
        if ">" in argv:
            target = argv[argv.index(">") + 1]
            argv = argv[: argv.index(">")]
        code = main(_small(argv))
        out, err = capsys.readouterr()
        assert code == 0, f"README command failed ({code}): {cmd}\n{err[-2000:]}"
        if target:
            Path(target).write_text(out)
        ran.append(cmd)
    assert len(ran) >= 15 and all(why in (SKIPS["device=cuda"], SKIPS["benchmarks/gpu_check.py"]) or "pip" in cmd or "pytest" in cmd
                                  for cmd, why in skipped)
    assert (work / "runs" / "adj" / "adjuster.pt").is_file() and (work / "clean.csv").is_file()
