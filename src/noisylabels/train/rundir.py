"""Run directories that are provably ours: a marker, a manifest, one writer at a time.

A folder is a run only if this library marked it when it created it: the marker file
``.noisylabels-run.json`` names the library, a run id and the *manifest*, every file and folder
the run wrote there (each record is registered as it is first written: :func:`register`).
Replacing a run (``--overwrite``, the default ``runs/latest``) removes exactly the manifest's
entries, never follows a symlink (a symlinked entry loses only the link) and never touches
anything else in the folder; a folder entry is removed only when it is itself a marked run
(a cross-fit fold, a NARL task), and only its own manifest, recursively. ``.``, the home folder,
``/`` and any folder holding a ``.git`` are never run directories.

Folders written by an older noisylabels carry no marker: they are never cleared automatically
(the message tells the user to remove the folder themselves or to choose another ``--out``).

One writer per run directory: :class:`RunDir` holds an advisory lock (``fcntl.flock`` on
``.noisylabels-run.lock``, released by the OS if the process dies) for the run's lifetime; a
second process is refused naming the holder's pid.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import UserError
from ..io import atomic_write_text

__all__ = ["MARKER", "LOCK", "RUN_MARKERS", "RunDir", "register", "read_marker", "check_run_dir", "mark_run_dir"]

MARKER = ".noisylabels-run.json"
LOCK = ".noisylabels-run.lock"
#: files whose presence (without a marker) shows a run of an older noisylabels
RUN_MARKERS = ("config.yaml", "summary.json", "checkpoint.pt", "metrics.jsonl", "error.txt")
_OURS = (MARKER, LOCK)
_HELD: set[str] = set()  # run directories this process holds the lock of


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The marker of ``folder`` (``None``: not a run this library marked)."""
    p = Path(folder) / MARKER
    if p.is_symlink() or not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("library") != "noisylabels" or not isinstance(m.get("manifest"), list):
        return None
    return m


def _write_marker(folder: Path, marker: dict[str, Any]) -> None:
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=1) + "\n")


def mark_run_dir(folder: str | Path) -> dict[str, Any]:
    """Mark ``folder`` (created if missing) as a new, empty run; returns the marker."""
    p = Path(folder)
    p.mkdir(parents=True, exist_ok=True)
    marker = {"library": "noisylabels", "version": __version__, "run_id": uuid.uuid4().hex, "manifest": []}
    _write_marker(p, marker)
    register(p)  # a run inside a run (a fold, a task) belongs to the outer run's manifest
    return marker


def register(path: str | Path) -> None:
    """Add ``path``'s name to the manifest of the run directory holding it (if it is one)."""
    path = Path(path)
    folder, name = path.parent, path.name
    if name in _OURS or not name:
        return
    marker = read_marker(folder)
    if marker is None or name in marker["manifest"]:
        return
    marker["manifest"].append(name)
    _write_marker(folder, marker)


def _valid_entry(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..", *_OURS) and "/" not in name and os.sep not in name


def _holds_records(folder: Path, marker: dict[str, Any]) -> bool:
    return any(os.path.lexists(folder / n) for n in marker["manifest"] if _valid_entry(n))


def _nested_runs(folder: Path) -> list[Path]:
    """The marked runs in ``folder``'s manifest (not through symlinks), recursively."""
    marker = read_marker(folder)
    out: list[Path] = []
    for name in (marker or {}).get("manifest", []):
        target = folder / name
        if _valid_entry(name) and not target.is_symlink() and target.is_dir() and read_marker(target) is not None:
            out += [target, *_nested_runs(target)]
    return out


def _clear(folder: Path) -> None:
    """Remove the manifest's entries of the marked run ``folder`` (and their leftover temporaries)."""
    for nested in _nested_runs(folder):  # all or nothing: refused before anything is removed
        _refuse_if_locked(nested)
    _clear_checked(folder)


def _clear_checked(folder: Path) -> None:
    marker = read_marker(folder)
    if marker is None:
        return
    names = [n for n in marker["manifest"] if _valid_entry(n)]
    for name in names:
        target = folder / name
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir() and read_marker(target) is not None:  # a run inside the run: its own manifest only
            _clear_checked(target)
            held = str(target.resolve()) in _HELD  # this process's own lock stays (it marks the folder anew)
            for own in _OURS:
                if own == LOCK and held:
                    continue
                if (target / own).is_file() and not (target / own).is_symlink():
                    (target / own).unlink()
            try:
                target.rmdir()
            except OSError:  # something not ours is left in it: keep it
                pass
        # any other folder is not ours: left alone
    for child in folder.iterdir():  # temporaries of an interrupted atomic write of a manifest entry
        if child.name.endswith(".tmp") and not child.is_dir() and any(child.name.startswith(f".{n}.") for n in names):
            child.unlink()


def _refuse_if_locked(folder: Path) -> None:
    if str(folder.resolve()) in _HELD:
        return
    lock = _try_lock(folder / LOCK) if (folder / LOCK).is_file() else None
    if lock is False:
        raise UserError(f"{folder} is in use by another noisylabels process (pid {_holder(folder / LOCK)}); "
                        "wait for it to finish, or choose another --out")
    if lock is not None:
        os.close(lock)


def _try_lock(path: Path) -> int | bool:
    """An fd holding an exclusive flock on ``path``, or False when another process holds it."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    return fd


def _holder(path: Path) -> str:
    try:
        words = path.read_text(errors="replace").split()  # the pid; never more than one line in a message
        return words[0] if words else "unknown"
    except OSError:
        return "unknown"


def _not_a_run_folder(p: Path) -> str | None:
    """Why ``p`` can never be a run directory (``None``: it can)."""
    try:
        real = p.resolve()
    except (OSError, RuntimeError):
        return None
    if real == Path.cwd().resolve():
        return "is the current folder"
    if real == Path.home().resolve():
        return "is your home folder"
    if real.parent == real:
        return "is the file-system root"
    if os.path.lexists(p / ".git"):
        return "holds a .git (a project, not a run)"
    return None


def check_run_dir(out: str | Path, *, resume: bool = False, overwrite: bool = False,
                  replace_default: bool = True) -> str:
    """Check, touching nothing, that a run may write into ``out``; returns what is there:
    ``"new"`` (missing or empty), ``"run"`` (a marked run holding records) or ``"legacy"``
    (a run of an older noisylabels, only with ``resume``).

    A new run into a folder holding a run is refused unless ``overwrite`` or ``out`` is the default
    ``runs/latest`` (``replace_default``); any other non-empty folder is refused (never cleared).
    """
    from ..config import DEFAULTS

    p = Path(out)
    why = _not_a_run_folder(p) if p.exists() else None
    if why:
        raise UserError(f"--out {p} {why}: a run needs a folder of its own; choose another --out")
    if p.exists() and not p.is_dir():
        raise UserError(f"--out {p} is an existing file, not a directory; choose another --out")
    if not p.is_dir():
        return "new"
    _refuse_if_locked(p)  # a run in progress there: say who holds it
    marker = read_marker(p)
    if marker is not None:
        if not _holds_records(p, marker):
            return "new"
        if resume:
            return "run"
        default = replace_default and os.path.normpath(str(p)) == os.path.normpath(str(DEFAULTS["out"]))
        if not (overwrite or default):
            raise UserError(f"--out {p} already holds a run; continue it with --resume, replace it with --overwrite "
                            f"(removes only that run's records), or choose another --out")
        return "run"
    others = [c.name for c in p.iterdir() if c.name not in _OURS]
    if not others:
        return "new"
    legacy = any(os.path.lexists(p / n) for n in RUN_MARKERS)
    if legacy and resume:
        return "legacy"
    if legacy:
        raise UserError(f"--out {p} holds a run of an older noisylabels (no {MARKER} marker), which is never "
                        f"cleared automatically: remove it yourself, or choose another --out")
    raise UserError(f"--out {p} is a non-empty folder that holds no noisylabels run; it is never cleared: "
                    f"choose another --out")


class RunDir:
    """The run directory ``out`` claimed by this process: checked, locked, and cleared only on :meth:`start`.

    Use as a context manager: entering checks (:func:`check_run_dir`) and takes the lock (a second
    process is refused naming the holder's pid); nothing is removed until :meth:`start`, which the
    caller invokes once everything the run reads has been read, so a run that fails on a mistake
    leaves the previous run intact. Leaving releases the lock.
    """

    def __init__(self, out: str | Path, *, resume: bool = False, overwrite: bool = False,
                 replace_default: bool = True) -> None:
        self.path = Path(out)
        self.resume, self.overwrite, self.replace_default = resume, overwrite, replace_default
        self._fd: int | None = None

    def __enter__(self) -> RunDir:
        self.state = check_run_dir(self.path, resume=self.resume, overwrite=self.overwrite,
                                   replace_default=self.replace_default)
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(self.path / LOCK)
        if fd is False:
            raise UserError(f"--out {self.path} is in use by another noisylabels process (pid "
                            f"{_holder(self.path / LOCK)}); wait for it to finish, or choose another --out")
        assert isinstance(fd, int)
        self._fd = fd
        _HELD.add(str(self.path.resolve()))
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            if created:  # an empty folder of ours from the start (a failed run leaves nothing to refuse)
                mark_run_dir(self.path)
            # checked again under the lock: another process may have written between the check and the lock
            self.state = check_run_dir(self.path, resume=self.resume, overwrite=self.overwrite,
                                       replace_default=self.replace_default)
        except BaseException:
            self.release()
            raise
        return self

    def start(self) -> None:
        """Make the folder this run's: a new run removes the previous run's records (its manifest
        only) and writes a fresh marker; a resumed run keeps everything. Once started, a second
        call changes nothing (what the run wrote in between stays)."""
        if self.state == "started" or (self.resume and self.state in ("run", "legacy")):
            return
        if self.state == "run":
            _clear(self.path)
        mark_run_dir(self.path)
        self.state = "started"

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            _HELD.discard(str(self.path.resolve()))
