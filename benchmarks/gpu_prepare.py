"""What ``python3 benchmarks/gpu_check.py --prepare`` writes, and what the GPU machine's run reads back.

A lent GPU machine gets a copy of the working tree and nothing beside it (no ``../shared``, no
network; at most 64 MiB with the carried folders). So the prepared folder (``.gpu/``, ignored by
the tracked ``.gitignore``: it is ignored in every clone and worktree, not only in this one's
``.git/info/exclude``) holds everything the check needs that the tree lacks:

* ``data/cifar10-train-jpeg.zip`` and ``data/cifar10-test-jpeg.zip``: a class-balanced subset of
  the shared CIFAR-10 JPEG zips, same member layout (``cifar10/train/<class>/<k>.jpg``, original
  file names, so ``<k>`` is still the image's rank within its class), read by the ``cifar10``
  loader like the full zips;
* ``wheels/``: pure-python wheels of the test tools (pytest, pytest-timeout, hypothesis and their
  small dependencies); :func:`install_missing_wheels` unpacks only those the machine cannot
  import into a private folder put on ``sys.path`` / ``PYTHONPATH`` (never over installed ones);
* ``manifest.json``: what was written (sizes, counts, seed), the mark that the folder is ours.

:func:`device_command` builds the one command line the device tool runs (at most 2,000 characters).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["PREPARED", "MANIFEST", "WHEELS", "MAX_COMMAND", "MAX_DATA_BYTES", "device_command", "carry_list",
           "subset_zip", "prepare", "read_manifest", "install_missing_wheels", "ensure_ignored"]

#: the prepared folder, relative to the repository root (``/.gpu/`` in ``.gitignore``)
PREPARED = ".gpu"
MANIFEST = "manifest.json"
#: the device tool's limit on one command line
MAX_COMMAND = 2000
#: the issue's limit on the carried data
MAX_DATA_BYTES = 30 * 2**20
#: pure-python test tools phase 1 needs (the machine's image usually has them: only missing ones are used)
WHEELS = ["pytest", "pluggy", "iniconfig", "pytest-timeout", "hypothesis", "sortedcontainers", "attrs"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class PrepareError(Exception):
    """A one-line reason ``--prepare`` cannot go on (printed, exit 2)."""


# -- the device command -----------------------------------------------------------------------------
def device_command(*, prepared: str = PREPARED, budget: float = 450, timeout: int = 520,
                   extra: str = "") -> str:
    """The command line for the device tool: the project through ``PYTHONPATH`` (no install step
    that could fail offline), the check under ``timeout`` with its whole output teed to ``$OUT``.

    ``set -o pipefail`` makes the line's status the script's (or 124 when ``timeout`` stopped it),
    not ``tee``'s. The script writes its summary file to ``$OUT`` after every check.
    """
    cmd = (f"set -o pipefail; export PYTHONPATH=$PWD/src${{PYTHONPATH:+:$PYTHONPATH}}; "
           f"nvidia-smi -L; PYTHONUNBUFFERED=1 timeout {int(timeout)} python3 benchmarks/gpu_check.py "
           f"--prepared {prepared} --budget {budget:g}{(' ' + extra.strip()) if extra.strip() else ''} "
           f"2>&1 | tee $OUT/gpu_check.log")
    if len(cmd) > MAX_COMMAND:
        raise PrepareError(f"device command is {len(cmd)} characters, the tool takes at most {MAX_COMMAND}")
    return cmd


def carry_list(prepared: str = PREPARED) -> list[str]:
    """The ignored paths the device call must name in ``carry``."""
    return [prepared]


# -- data -------------------------------------------------------------------------------------------
def subset_zip(src: Path, dst: Path, *, split: str, per_class: int, seed: int) -> int:
    """Copy ``per_class`` images of each CIFAR-10 class of ``src``'s ``split`` into ``dst``.

    Members keep their names and bytes (stored: JPEGs do not compress), so the loader reads the
    subset exactly as it reads the full zip. The images of each class are drawn without
    replacement by ``np.random.default_rng(seed)`` from the sorted member list.

    Returns
    -------
    int
        The number of images written.
    """
    pat = re.compile(rf"^(?:[^/]+/)?{re.escape(split)}/([^/]+)/[^/]+\.(?:jpe?g|png)$", re.IGNORECASE)
    try:
        zin = zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as err:
        raise PrepareError(f"cannot read {src}: {err or type(err).__name__}") from None
    with zin:
        by_class: dict[str, list[zipfile.ZipInfo]] = {}
        for info in zin.infolist():
            m = pat.match(info.filename)
            if m and not info.is_dir():
                by_class.setdefault(m.group(1), []).append(info)
        missing = [c for c in CLASSES if c not in by_class]
        if missing:
            raise PrepareError(f"{src}: no {split}/<class>/ images for {', '.join(missing)} (not the CIFAR-10 JPEG zip?)")
        short = [f"{c} ({len(by_class[c])})" for c in CLASSES if len(by_class[c]) < per_class]
        if short:
            raise PrepareError(f"{src}: fewer than {per_class} {split} images in {', '.join(short)}")
        rng = np.random.default_rng(seed)
        tmp = dst.with_name(dst.name + ".part")
        n = 0
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for c in CLASSES:
                infos = sorted(by_class[c], key=lambda i: i.filename)
                for k in sorted(rng.choice(len(infos), size=per_class, replace=False).tolist()):
                    info = infos[k]
                    zout.writestr(info.filename, zin.read(info))
                    n += 1
        os.replace(tmp, dst)
    return n


def _find_source(given: str | None, root: Path) -> Path:
    cands = [Path(given)] if given else [root / "shared" / "data", root.parent / "shared" / "data"]
    env = os.environ.get("NOISYLABELS_DATA_DIR")
    if env and not given:
        cands.append(Path(env))
    for c in cands:
        if (c / "cifar10-train-jpeg.zip").is_file() and (c / "cifar10-test-jpeg.zip").is_file():
            return c
    raise PrepareError("no cifar10-train-jpeg.zip and cifar10-test-jpeg.zip in "
                       + ", ".join(map(str, cands)) + " (pass --data-dir)")


# -- wheels -----------------------------------------------------------------------------------------
def _wheel_name(path: Path) -> tuple[str, str]:
    """``(distribution, version)`` of a wheel file name."""
    parts = path.name.split("-")
    return parts[0].lower().replace("_", "-"), parts[1]


def _import_name(dist: str) -> str:
    return dist.lower().replace("-", "_")


def _download_wheels(dest: Path, names: list[str]) -> list[str]:
    """``pip download`` pure-python wheels (the versions installed here where there are some)."""
    specs = []
    for n in names:
        try:
            specs.append(f"{n}=={metadata.version(n)}")
        except metadata.PackageNotFoundError:
            specs.append(n)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "py", "--platform", "any", "-d", str(dest), *specs]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise PrepareError(f"pip download {' '.join(specs)} failed: {tail}")
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    impure = [w for w in wheels if not w.endswith("-none-any.whl")]
    if impure:
        raise PrepareError(f"not pure-python wheels (they are unpacked, not built): {', '.join(impure)}")
    return wheels


def install_missing_wheels(wheel_dir: Path, site: Path) -> list[str]:
    """Unpack each wheel in ``wheel_dir`` whose package this interpreter cannot import into ``site``.

    Installed packages are never shadowed (a carried pytest over the machine's own would break its
    plugins). ``site`` is put first on ``sys.path`` and ``PYTHONPATH`` (for subprocesses) when
    anything was unpacked. Returns the distributions unpacked.
    """
    done = []
    for whl in sorted(Path(wheel_dir).glob("*.whl")):
        dist, version = _wheel_name(whl)
        if importlib.util.find_spec(_import_name(dist)) is not None:
            continue
        site.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(whl) as z:  # a pure-python wheel installs by unpacking (purelib)
            z.extractall(site)
        done.append(f"{dist} {version}")
    if done:
        sys.path.insert(0, str(site))
        importlib.invalidate_caches()
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return done


# -- the folder -------------------------------------------------------------------------------------
def ensure_ignored(root: Path, folder: str) -> str:
    """Make sure git ignores ``root/folder``: ``.gitignore`` has ``/.gpu/``; an older checkout gets it
    in ``git rev-parse --git-path info/exclude`` (the common one in a worktree). Returns how."""
    probe = f"{folder}/manifest.json"
    try:
        res = subprocess.run(["git", "check-ignore", "-q", probe], cwd=root, capture_output=True, text=True)
    except OSError:
        return "not a git checkout (git not found)"
    if res.returncode == 0:
        return "ignored (.gitignore)"
    if res.returncode != 1:
        return "not a git checkout"
    path = subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
    exclude = (root / path) if path and not os.path.isabs(path) else Path(path)
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with open(exclude, "a") as f:
        f.write(f"\n/{folder}/\n")
    return f"added /{folder}/ to {exclude}"


def read_manifest(folder: Path) -> dict | None:
    """The prepared folder's manifest, or ``None`` when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


#: what ``gpu_check.py`` writes to ``.gpu/out`` when ``$OUT`` is unset (a folder --prepare may keep)
OUT_FILES = {"gpu_check_summary.txt", "gpu_check_summary.txt.tmp", "pytest.log", "pytest.xml", "gpu_check.log"}


def _ours(folder: Path) -> bool:
    """Whether ``folder`` is empty, holds our manifest, or only the check's own ``out/`` files."""
    if read_manifest(folder) is not None:
        return True
    for p in folder.iterdir():
        if not (p.name == "out" and p.is_dir() and all(q.name in OUT_FILES for q in p.iterdir())):
            return False
    return True


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare(root: Path, *, data_dir: str | None = None, train_per_class: int = 800, test_per_class: int = 200,
            seed: int = 0, wheels: bool = True) -> dict:
    """Write ``root/.gpu`` (data subset, wheels, manifest); returns the manifest.

    A folder that exists without our manifest is refused (it is not ours to replace); ours is
    rewritten. Raises :class:`PrepareError` with a one-line reason.
    """
    folder = root / PREPARED
    if folder.exists() and not _ours(folder):
        raise PrepareError(f"{folder} exists and was not written by --prepare (no {MANIFEST}); move it away first")
    if min(train_per_class, test_per_class) < 1:
        raise PrepareError("--train-per-class and --test-per-class must be >= 1")
    src = _find_source(data_dir, root)
    t0 = time.monotonic()
    ignored = ensure_ignored(root, PREPARED)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        name = f"cifar10-{split}-jpeg.zip"
        counts[split] = subset_zip(src / name, folder / "data" / name, split=split, per_class=per, seed=seed)
    data_bytes = _folder_bytes(folder / "data")
    if data_bytes > MAX_DATA_BYTES:
        raise PrepareError(f"the data subset is {data_bytes / 2**20:.1f} MiB, over the {MAX_DATA_BYTES // 2**20} MiB "
                           "limit: ask for fewer images per class")
    wheel_dir = folder / "wheels"
    if wheel_dir.exists():
        shutil.rmtree(wheel_dir)  # ours (the manifest says so): a fresh download, one version of each
    wheel_dir.mkdir()
    got = _download_wheels(wheel_dir, WHEELS) if wheels else []
    manifest = {
        "written_by": "benchmarks/gpu_check.py --prepare", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(src), "seed": seed, "train_images": counts["train"], "test_images": counts["test"],
        "train_per_class": train_per_class, "test_per_class": test_per_class, "data_bytes": data_bytes,
        "sha256": {n: _sha256(folder / "data" / n) for n in sorted(os.listdir(folder / "data"))},
        "wheels": got, "ignored": ignored, "seconds": round(time.monotonic() - t0, 1),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["total_bytes"] = _folder_bytes(folder)
    return manifest
