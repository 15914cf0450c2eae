"""One prepared run on one GPU (at most about 8 minutes): the checks of the CUDA code paths a CPU cannot make.

Written for a first run on a bare machine that has a copy of the working tree and nothing beside
it: ``--prepare`` (run beforehand where the shared data are) writes the ignored folder ``.gpu/``
with a class-balanced CIFAR-10 subset and the wheels of any missing test tool, and prints the
device command and its ``carry`` list (:mod:`gpu_prepare`).

1. **Equality tests on the device**: ``tests/meta/test_graph_jvp_backends.py`` (its
   device-parametrized tests run on ``cuda`` when it is available: every registered model's
   recorded forward, including ``CudnnBatchNormBackward0`` and ``NativeDropoutBackward0``, walked
   without fallback and equal to ``torch.func.jvp``; the engine's meta-gradient equal to the
   double-backward reference), the real-timm adapter test, then ``tests/meta/test_graph_jvp.py``
   and ``tests/meta/test_engine.py`` (pytest ``--maxfail=10 -rfE --tb=short --timeout=120``, its
   whole output in ``pytest.log``). Then the float32 graph-JVP of every model against
   ``torch.func.jvp`` on the device, its maximum error printed beside the tolerance.
2. **meta_speed** (``benchmarks/meta_speed.py``'s timing, same variants) for ResNet-32 and
   WRN-28-10 at batch 100, with bf16 autocast off and on (``train.amp``: autocast entered per
   step, as the training loop does), and the JVP path each took.
3. **Training runs** on CIFAR-10 (the carried subset, 40% symmetric noise, batch 100): the CUDA
   resume check (a run killed with SIGKILL mid-run and resumed writes the same ``metrics.jsonl``
   and weights as an uninterrupted one; each part a fresh process, deterministic kernels), the
   nodes of a WRN (dropout) training forward, then two epochs of every registered method
   (ResNet-32): seconds, accuracy, which JVP path the engine took and every autograd node that
   had no rule.
4. **ddp_scaling** (only with more than one GPU): ``benchmarks/ddp_scaling.py --device cuda``,
   training images/s on 1, 2, 4, ... GPUs for ERM (ResNet-32) and MW-Net (LeNet), ratios printed.

Every phase runs in its own ``try`` and has a share of ``--budget`` seconds (default 450); a
phase that runs out says so. Each check adds one line to the summary (PASS / FAIL / SKIP with its
figure), rewritten to ``gpu_check_summary.txt`` in ``--out`` (default ``$OUT``, else
``.gpu/out``) after every check, so a run stopped by ``timeout`` still reports what it finished;
SIGTERM prints the summary block before exiting.

    python3 benchmarks/gpu_check.py --prepare                 # here, where ../shared/data is
    python3 benchmarks/gpu_check.py                           # any GPU machine with .gpu/ or CIFAR-10
    python3 benchmarks/gpu_check.py --device cpu --quick      # the CPU rehearsal of the script
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_prepare as prep  # noqa: E402

__all__ = ["Summary", "first_line", "jvp_path", "main"]

SPEED_VARIANTS = ["erm", "mwnet", "mwnet-jvp-func", "mwnet-delayed", "l2rw", "l2b", "narl", "double-backward"]
SUMMARY_FILE = "gpu_check_summary.txt"
TIMM_TEST = "tests/models/test_checkpoint.py::test_real_timm_resnet18_through_the_adapter"
#: float32 graph JVP vs torch.func.jvp: the tolerance of tests/meta/test_graph_jvp_backends.py
F32_TOL = {"rtol": 1e-4, "atol": 1e-4}


# -- reporting -------------------------------------------------------------------------------------------
def first_line(exc: BaseException) -> str:
    """``Type: first non-empty line of the message`` (also for exceptions with an empty message)."""
    lines = [s for s in str(exc).splitlines() if s.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__


class Summary:
    """One line per check (``PASS`` / ``FAIL`` / ``SKIP`` and its figure), rewritten to ``path``
    after every check (atomically) so that a run cut short still leaves what it finished."""

    def __init__(self, path: Path | None, title: str) -> None:
        self.path, self.title = path, title
        self.rows: list[tuple[str, str, str]] = []
        self.note: str | None = None
        self.running: str | None = None  # the phase in progress (named when the run is cut short)
        self.write()

    def add(self, check: str, ok: bool | None, figure: str) -> None:
        """Record a check: ``ok`` True (PASS), False (FAIL) or None (SKIP: not run, say why)."""
        status = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        self.rows.append((status, check, " ".join(figure.split())))
        print(f"   -> {status} {check}: {figure}", flush=True)
        self.write()

    def failed(self) -> bool:
        return any(s == "FAIL" for s, _, _ in self.rows) or self.note is not None

    def block(self) -> str:
        counts = {k: sum(s == k for s, _, _ in self.rows) for k in ("PASS", "FAIL", "SKIP")}
        tail = ", ".join(f"{v} {k}" for k, v in counts.items())
        lines = [f"== gpu_check summary: {self.title} =="]
        lines += [f"{s:4}  {c}: {f}" for s, c, f in self.rows]
        if self.note:
            lines.append(f"INCOMPLETE  {self.note}")
        lines.append(f"== {tail}{'; ' + self.note if self.note else ''} ==")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        if self.path is None:
            return
        try:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(self.block())
            os.replace(tmp, self.path)
        except OSError as err:  # a full disk must not stop the checks: the log still has every line
            print(f"   (could not write {self.path}: {first_line(err)})", flush=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``): raised in the main thread so the summary is printed on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated("SIGTERM")


class Clock:
    def __init__(self, budget: float) -> None:
        self.t0, self.budget = time.monotonic(), float(budget)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.t0:5.0f} s]"


def header(text: str, clock: Clock) -> None:
    print(f"\n{clock.stamp()} == {text}", flush=True)


def jvp_path(counts: dict[str, int], walks: int | None = None) -> str:
    """Which JVP path the engine took: ``counts`` are :func:`graph_jvp.fallback_counts` (node name ->
    fallbacks it forced), ``walks`` the recorded graphs looked at (``None``: not counted)."""
    if counts:
        return "torch.func.jvp fallback: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    if walks == 0:
        return "no JVP (no meta-gradient step)"
    if walks is None:
        return "graph walk (every node had a rule)"
    return f"graph walk ({walks} graph{'' if walks == 1 else 's'}, every node had a rule)"


@contextlib.contextmanager
def counting_walks() -> Iterator[list[int]]:
    """Count the recorded graphs the graph JVP orders (``graph_jvp`` and ``supports_graph`` both
    call ``_forward_order``), so a method that never took a JVP is told apart from one that did."""
    gj = importlib.import_module("noisylabels.meta.graph_jvp")
    orig, n = gj._forward_order, [0]

    def counted(root: Any) -> Any:
        n[0] += 1
        return orig(root)

    gj._forward_order = counted
    try:
        yield n
    finally:
        gj._forward_order = orig


def guarded(summary: Summary, check: str, fn: Callable[[], None]) -> None:
    """Run one phase; an exception becomes a FAIL line (with a short traceback) and the next phase runs."""
    summary.running = check
    try:
        fn()
    except Exception as exc:  # noqa: BLE001  (report and go on: the other checks still run)
        traceback.print_exc(limit=4)
        summary.add(check, False, f"crashed: {first_line(exc)}")


# -- 1 ---------------------------------------------------------------------------------------------------
def _tee(cmd: list[str], log: Path, *, limit: float, env: dict[str, str]) -> tuple[int | None, float]:
    """Run ``cmd`` with its output copied to ``log`` and to stdout (indented); kill its process
    group after ``limit`` s. Returns ``(returncode or None when cut short, seconds)``."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                print("   " + line.rstrip("\n"), flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc: int | None = proc.wait(timeout=max(10.0, limit))
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=5)
    return rc, time.monotonic() - t0


def _junit(path: Path) -> tuple[dict[str, int], dict[str, tuple[str, str]]]:
    """Counts and per-test outcomes (``passed`` / ``failed`` / ``skipped``, message) of our junit file."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    tests: dict[str, tuple[str, str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):  # a file pytest just wrote for us
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kind, msg = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                kind, msg = "failed", child.get("message", "")
            elif child.tag == "skipped":
                kind, msg = "skipped", child.get("message", "")
        counts[kind] += 1
        tests[name] = (kind, msg)
    return counts, tests


def phase_tests(args: argparse.Namespace, clock: Clock, limit: float, summary: Summary) -> None:
    import torch

    files = ["tests/meta/test_graph_jvp_backends.py", TIMM_TEST]
    if not args.quick:
        files += ["tests/meta/test_graph_jvp.py", "tests/meta/test_engine.py"]
    timeout = ["--timeout=120"] if importlib.util.find_spec("pytest_timeout") else []
    xml = args.out / "pytest.xml"
    xml.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
           "-W", "ignore::DeprecationWarning", "--maxfail=10", "-rfE", "--tb=short", *timeout,
           f"--junitxml={xml}", *files]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                      if p)}
    header(f"1. equality tests ({'CUDA available' if torch.cuda.is_available() else 'no CUDA: CPU only'}), "
           f"{'per-test timeout 120 s' if timeout else 'no pytest-timeout: no per-test timeout'}, "
           f"limit {limit:.0f} s: " + " ".join(files), clock)
    if importlib.util.find_spec("pytest") is None:
        summary.add("pytest equality tests", False, "pytest is not installed and no wheel was carried")
        return
    rc, secs = _tee(cmd, args.out / "pytest.log", limit=limit, env=env)
    try:
        counts, tests = _junit(xml)
    except (OSError, ET.ParseError):
        counts, tests = {}, {}
    figure = ", ".join(f"{v} {k}" for k, v in counts.items()) if counts else "no results file"
    if rc is None:
        summary.add("pytest equality tests", False, f"cut short after {secs:.0f} s (see pytest.log); {figure}")
    else:
        summary.add("pytest equality tests", rc == 0,
                    f"{figure} in {secs:.0f} s (exit {rc}){'' if timeout else '; no per-test timeout'}")
    timm = [v for k, v in tests.items() if k.endswith("test_real_timm_resnet18_through_the_adapter")]
    if timm:
        kind, msg = timm[0]
        summary.add("real timm: adapter test", None if kind == "skipped" else kind == "passed",
                    kind + (f": {msg}" if msg else ""))
    else:
        summary.add("real timm: adapter test", None, "no result (pytest cut short or not run)")


def phase_f32_jvp(args: argparse.Namespace, clock: Clock, summary: Summary) -> None:
    """The float32 graph-JVP of each model's training forward on the device against
    :func:`torch.func.jvp` (TF32 off, the same dropout masks): max error beside the tolerance."""
    import torch

    from noisylabels.meta.functional import functional_logits, params_and_buffers
    from noisylabels.meta.graph_jvp import JVP_RULES, graph_jvp
    from noisylabels.models import create_model, list_models

    gj = importlib.import_module("noisylabels.meta.graph_jvp")
    dev = torch.device(args.device)
    names = ["resnet8", "wrn"] if args.quick else [m for m in list_models() if m != "wrn28_10"]
    header(f"1b. float32 graph JVP vs torch.func.jvp on {dev} (TF32 off; tolerance atol {F32_TOL['atol']:g} + "
           f"rtol {F32_TOL['rtol']:g} x |ref|): {', '.join(names)}", clock)
    worst: tuple[float, str] = (0.0, "-")
    max_err, bad, missing = 0.0, [], set()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name in names:
            if clock.left() < 5:
                bad.append(f"{name} (budget spent)")
                continue
            try:
                channels, size = {"lenet": (1, 28), "mlp": (1, 8)}.get(name, (3, 32 if dev.type == "cuda" else 16))
                opts = {"depth": 10, "widen_factor": 2, "dropout": 0.3} if name == "wrn" else {}
                model = create_model(name, num_classes=5, in_channels=channels, image_size=size, seed=0,
                                     **opts).to(dev).train()
                params, buffers = params_and_buffers(model)
                g = torch.Generator().manual_seed(1)
                x = torch.randn(4, channels, size, size, generator=g).to(dev)
                tangent = {n: torch.randn(p.shape, generator=g).to(dev) for n, p in params.items()}
                forked = [dev] if dev.type == "cuda" else []
                with torch.random.fork_rng(devices=forked):
                    z = functional_logits(model, params, buffers, x)
                nodes = {type(n).__name__ for n in gj._forward_order(z.grad_fn)}
                missing |= {n for n in nodes if n not in JVP_RULES}
                gj.fallback_counts(reset=True)
                u = graph_jvp(z, {params[n]: t for n, t in tangent.items()})
                fell = gj.fallback_counts(reset=True)
                fixed = dict(params)

                def f(*ps: torch.Tensor) -> torch.Tensor:
                    return functional_logits(model, {**fixed, **dict(zip(tangent, ps))}, buffers, x)

                with torch.random.fork_rng(devices=forked):  # the same dropout masks
                    ref = torch.func.jvp(f, tuple(params[n].detach() for n in tangent), tuple(tangent.values()))[1]
                err = (u - ref).abs()
                ratio = float((err / (F32_TOL["atol"] + F32_TOL["rtol"] * ref.abs())).max())
                e = float(err.max())
                max_err = max(max_err, e)
                if ratio > worst[0]:
                    worst = (ratio, name)
                cudnn = "CudnnBatchNormBackward0" in nodes
                print(f"   {name}: max |graph - func| {e:.2e} (max |ref| {float(ref.abs().max()):.2e}; "
                      f"{ratio:.3f} of the tolerance){'; cuDNN BatchNorm walked' if cudnn else ''}"
                      f"{'; ' + jvp_path(fell) if fell else ''}", flush=True)
                if ratio > 1 or fell:
                    bad.append(name)
            except Exception as exc:  # noqa: BLE001
                print(f"   {name}: FAILED {first_line(exc)}", flush=True)
                bad.append(f"{name} ({first_line(exc)})")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    summary.add(f"float32 graph JVP = torch.func.jvp on {dev.type} ({len(names)} models)", not bad,
                f"max error {max_err:.2e} vs tolerance atol {F32_TOL['atol']:g} + rtol {F32_TOL['rtol']:g}*|ref| "
                f"(worst {worst[0]:.3f} of it, {worst[1]}); nodes without a rule: "
                f"{', '.join(sorted(missing)) or 'none'}{'; FAILED: ' + ', '.join(bad) if bad else ''}")


# -- 2 ---------------------------------------------------------------------------------------------------
def phase_speed(args: argparse.Namespace, clock: Clock, limit: float, summary: Summary) -> None:
    import math

    import meta_speed as ms
    import torch

    gj = importlib.import_module("noisylabels.meta.graph_jvp")
    models = ["resnet8", "lenet"] if args.quick else ["resnet32", "wrn28_10"]
    for m in models:
        ms.MODELS.setdefault(m, (3, 32))
    header(f"2. meta_speed at batch {args.batch_size} on {args.device}: {', '.join(models)}; "
           f"train.amp none / bf16 (autocast per step)", clock)
    end = clock.left() - limit
    for model in models:
        for amp in ("none", "bf16"):
            check = f"meta_speed {model} amp={amp}"
            if clock.left() - end < 5:
                summary.add(check, None, "phase budget spent")
                continue
            gj.fallback_counts(reset=True)
            t0 = time.monotonic()
            try:
                with warnings.catch_warnings(), counting_walks() as walks:
                    warnings.simplefilter("ignore")
                    res = ms.time_model(model, SPEED_VARIANTS, batch_size=args.batch_size,
                                        meta_batch_size=args.batch_size, device=args.device, seed=0,
                                        repeats=1 if args.quick else 5, warmup=1 if args.quick else 2, amp=amp)
            except Exception as exc:  # noqa: BLE001  (report and go on: the other checks still run)
                traceback.print_exc(limit=3)
                summary.add(check, False, first_line(exc))
                continue
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            erm = res["erm"]["ms"]
            cells = ", ".join(f"{n} {r['ms']:.1f} ms ({r['ms'] / erm:.2f}x)" for n, r in res.items())
            fell = gj.fallback_counts(reset=True)
            print(f"   {model} amp={amp} ({time.monotonic() - t0:.0f} s): {cells}")
            print(f"      JVP path: {jvp_path(fell, walks[0])}")
            ok = all(math.isfinite(r["ms"]) for r in res.values())
            short = ", ".join(f"{n} {res[n]['ms'] / erm:.2f}x" for n in ("mwnet", "l2rw", "double-backward") if n in res)
            summary.add(check, ok, f"erm {erm:.1f} ms/step; {short}; JVP {jvp_path(fell, walks[0])}")


# -- 4 (only with more than one GPU) -----------------------------------------------------------------
def phase_ddp(args: argparse.Namespace, clock: Clock, summary: Summary) -> None:
    """``benchmarks/ddp_scaling.py --device cuda``: images/s on 1, 2, 4, ... GPUs (ERM, MW-Net)."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        summary.add("ddp_scaling", None, f"{n} GPU(s): needs more than one")
        return
    data_dir, _ = find_data(args)
    if data_dir is None:
        summary.add("ddp_scaling", None, "no CIFAR-10 data")
        return
    header(f"4. ddp_scaling on {n} GPUs (ERM resnet32, MW-Net lenet, global batch 256)", clock)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "ddp_scaling.py"), "--device", "cuda", "--data-dir", data_dir,
           "--steps", "4" if args.quick else "10"]
    code, secs = _tee(cmd, args.out / "ddp_scaling.log", limit=max(30.0, clock.left() - 5),
                      env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    ratios = [ln.strip() for ln in (args.out / "ddp_scaling.log").read_text().splitlines() if "ratio to" in ln]
    summary.add("ddp_scaling", code == 0, "; ".join(ratios) or f"exit {code} after {secs:.0f} s")


# -- 3 ---------------------------------------------------------------------------------------------------
def find_data(args: argparse.Namespace) -> tuple[str | None, bool]:
    """``(folder with cifar10-train-jpeg.zip, whether it is the prepared subset)``: ``--data-dir``,
    the prepared folder's ``data/``, ``shared/data`` in the checkout, ``../shared/data`` beside it,
    ``$NOISYLABELS_DATA_DIR``."""
    if args.data_dir:
        return args.data_dir, False
    cands: list[tuple[Path, bool]] = []
    if args.prepared is not None:
        cands.append((args.prepared / "data", True))
    cands += [(ROOT / "shared" / "data", False), (ROOT.parent / "shared" / "data", False)]
    if os.environ.get("NOISYLABELS_DATA_DIR"):
        cands.append((Path(os.environ["NOISYLABELS_DATA_DIR"]), False))
    for c, ours in cands:
        if (c / "cifar10-train-jpeg.zip").is_file():
            return str(c), ours
    return None, False


def run_overrides(args: argparse.Namespace, data_dir: str, subset: bool, out: str) -> dict[str, Any]:
    """The settings every phase-3 run shares (the carried subset is used whole; full CIFAR-10 is
    cut to the subset's size so both take the same time)."""
    sizes = {"data.train_subset": 600, "data.test_subset": 200, "data.meta_size": 100} if args.quick else (
        {} if subset else {"data.train_subset": 8000, "data.test_subset": 2000})
    return {"device": args.device, "data.name": "cifar10", "data.dir": data_dir, "noise.type": "symmetric",
            "noise.rate": 0.4, "train.batch_size": args.batch_size, "optim.lr": 0.1, "train.progress": False,
            "out": out, **sizes}


def resume_overrides(args: argparse.Namespace, data_dir: str, subset: bool, out: str) -> dict[str, Any]:
    """The resume check's run: RNG on the device in every step (WRN dropout, augmentation, MW-Net's
    meta batches), three epochs."""
    over = run_overrides(args, data_dir, subset, out)
    if args.quick:
        over.update({"data.train_subset": 300, "data.test_subset": 100, "data.meta_size": 50})
    else:
        over.update({"data.train_subset": 3000, "data.test_subset": 1000})
    over.update({"model.name": "wrn", "model.depth": 10, "model.widen_factor": 1 if args.quick else 2,
                 "model.dropout": 0.3, "method.name": "mwnet", "train.epochs": 3})
    return over


def resume_child(args: argparse.Namespace) -> None:
    """One part of the resume check in its own process (``--resume-child OUT [--resume]``)."""
    import torch

    from noisylabels.config import resolve_config
    from noisylabels.train import fit

    torch.use_deterministic_algorithms(True, warn_only=True)  # the comparison is bitwise
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    data_dir, subset = find_data(args)
    assert data_dir is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(resolve_config(overrides=resume_overrides(args, data_dir, subset, args.resume_child)), resume=args.resume)


def _child_cmd(args: argparse.Namespace, out: Path, *, resume: bool) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--resume-child", str(out), "--device", args.device,
           "--batch-size", str(args.batch_size)]
    if args.quick:
        cmd.append("--quick")
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.prepared is not None:
        cmd += ["--prepared", str(args.prepared)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd + (["--resume"] if resume else [])


def check_resume(args: argparse.Namespace, clock: Clock, limit: float, work: Path, summary: Summary) -> None:
    """Uninterrupted run vs a run SIGKILLed after its first epoch and resumed (fresh processes)."""
    import torch

    check = f"resume after SIGKILL on {args.device} = uninterrupted"
    deadline = time.monotonic() + limit
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

    def run(out: Path, *, resume: bool = False) -> None:
        left = deadline - time.monotonic()
        if left < 5:
            raise TimeoutError("check budget spent")
        res = subprocess.run(_child_cmd(args, out, resume=resume), env=env, capture_output=True, text=True,
                             timeout=left)
        if res.returncode != 0:
            tail = [s for s in (res.stdout + res.stderr).splitlines() if s.strip()][-3:]
            raise RuntimeError(f"{out.name}{' --resume' if resume else ''} exited {res.returncode}: "
                               + " | ".join(tail))

    t0 = time.monotonic()
    full, part = work / "full", work / "part"
    try:
        run(full)
        proc = subprocess.Popen(_child_cmd(args, part, resume=False), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        killed_at = None
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                s = json.loads((part / "summary.json").read_text())
            except (OSError, ValueError):
                s = {}
            if s.get("epochs_run", 0) >= 1:
                proc.kill()
                killed_at = s["epochs_run"]
                break
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if killed_at is None:
            summary.add(check, False, "the run to kill ended (or the budget ran out) before its first epoch was "
                                      "recorded: nothing checked")
            return
        status = json.loads((part / "summary.json").read_text()).get("status")
        run(part, resume=True)
        a, b = (p / "metrics.jsonl" for p in (full, part))
        same_metrics = a.read_text() == b.read_text()
        wa = torch.load(full / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        wb = torch.load(part / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
        diff = max(float((wa[k].double() - wb[k].double()).abs().max()) if wa[k].is_floating_point()
                   else float((wa[k] != wb[k]).any()) for k in wa)
        ok = same_metrics and diff == 0.0
        figure = (f"killed after {killed_at} of 3 epochs (status {status}), resumed: metrics.jsonl "
                  f"{'identical' if same_metrics else 'DIFFERENT'}, max |weight difference| {diff:.3g} "
                  f"({time.monotonic() - t0:.0f} s)")
        if not ok and deadline - time.monotonic() > 10:  # is it the resume, or non-deterministic kernels?
            run(work / "full2")
            again = (work / "full2" / "metrics.jsonl").read_text() == a.read_text()
            figure += f"; a second uninterrupted run is {'identical' if again else 'also different'}"
        summary.add(check, ok, figure)
    except Exception as exc:  # noqa: BLE001
        summary.add(check, False, f"{first_line(exc)} ({time.monotonic() - t0:.0f} s)")


def probe_wrn(args: argparse.Namespace, data_dir: str, subset: bool, out: str, summary: Summary) -> set[str]:
    """The autograd nodes of a WRN (dropout) training forward on the device; returns those without a rule."""
    import torch

    from noisylabels.config import resolve_config
    from noisylabels.meta.graph_jvp import JVP_RULES, supports_graph
    from noisylabels.train import build_context

    gj = importlib.import_module("noisylabels.meta.graph_jvp")
    check = f"nodes of a WRN (dropout) training forward on {args.device}"
    try:
        over = run_overrides(args, data_dir, subset, out)
        over.update({"model.name": "wrn", "model.dropout": 0.3, "model.depth": 10})
        ctx = build_context(resolve_config(overrides=over))
        x = torch.randn(8, 3, 32, 32, device=args.device)
        z = ctx.model.train()(x)
        names = sorted({type(n).__name__ for n in gj._forward_order(z.grad_fn)})
        missing = {n for n in names if n not in JVP_RULES}
        print(f"   nodes: {', '.join(names)}")
        summary.add(check, supports_graph(z), f"{len(names)} kinds; without a rule: {', '.join(sorted(missing)) or 'none'}")
        return missing
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(limit=3)
        summary.add(check, False, first_line(exc))
        return set()


def method_setup(name: str, tmp: Path) -> dict[str, Any]:
    """What a method needs beyond the shared settings. ``t-narl`` reads a meta-trained adjuster
    (``noisylabels narl-train``): an untrained, seeded one exercises the same transfer run;
    ``dividemix`` warms up for one epoch, so the second divides and trains by MixMatch; so does
    ``promix``, whose second epoch selects and trains both heads (its ramps over one epoch); ``simclr``
    runs with what ``noisylabels pretrain`` changes (``PRETRAIN_DEFAULTS``: its views, no noise)."""
    if name == "dividemix":
        return {"method.warmup_epochs": 1}
    if name == "promix":
        return {"method.warmup_epochs": 1, "method.rampup_epochs": 1}
    if name == "simclr":
        return {"data.augment": "none", "data.strong_augment": "simclr", "noise.type": "none", "noise.rate": 0.0}
    if name != "t-narl":
        return {}
    import torch

    from noisylabels.methods import Adjuster, save_adjuster
    from noisylabels.methods.narl import FAMILIES

    fam, path = FAMILIES["gce"], tmp / "adjuster-gce.pt"
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(Adjuster(len(fam.hparams), scale=fam.scale, low=fam.low, high=fam.high))
    save_adjuster(path, family="gce", adjuster=nets[0], snapshots=[n.state_dict() for n in nets],
                  snapshot_epochs=[1, 2, 3], tasks=["gpu_check (untrained)"])
    return {"method.adjuster": str(path)}


def phase_methods(args: argparse.Namespace, clock: Clock, limit: float, summary: Summary) -> None:
    import torch

    from noisylabels.config import resolve_config
    from noisylabels.methods import list_methods
    from noisylabels.train import fit

    gj = importlib.import_module("noisylabels.meta.graph_jvp")
    data_dir, subset = find_data(args)
    model = "resnet8" if args.quick else "resnet32"
    methods = [m for m in list_methods() if not m.startswith("test-")]
    header(f"3. training runs on CIFAR-10 ({data_dir or 'not found'}{', the carried subset' if subset else ''}): "
           f"resume check, WRN node probe, two epochs of {', '.join(methods)} ({model}, batch {args.batch_size}); "
           f"limit {limit:.0f} s", clock)
    if data_dir is None:
        summary.add("CIFAR-10 for phase 3", False, "no cifar10-train-jpeg.zip: run --prepare here and carry .gpu, "
                                                   "or pass --data-dir")
        return
    end = clock.left() - limit
    missing: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        os.environ.setdefault("NOISYLABELS_CACHE", os.path.join(tmp, "cache"))  # decoded JPEGs, shared by the runs
        missing |= probe_wrn(args, data_dir, subset, os.path.join(tmp, "probe"), summary)
        check_resume(args, clock, min(0.35 * limit, clock.left() - end), Path(tmp) / "resume", summary)
        last = None
        for name in methods:
            check = f"2 epochs of {name}"
            left = clock.left() - end
            if last is not None and left < last * 1.2:
                summary.add(check, None, f"phase budget spent (about {last:.0f} s needed, {max(0.0, left):.0f} s left)")
                continue
            over = run_overrides(args, data_dir, subset, os.path.join(tmp, name))
            over.update({"model.name": model, "method.name": name, "train.epochs": 2})
            gj.fallback_counts(reset=True)
            t0 = time.monotonic()
            try:
                over.update(method_setup(name, Path(tmp)))
                with warnings.catch_warnings(record=True) as caught, counting_walks() as walks:
                    warnings.simplefilter("always", RuntimeWarning)
                    s = fit(resolve_config(overrides=over))
                last = time.monotonic() - t0
                fell = gj.fallback_counts(reset=True)
                missing |= set(fell)
                ours = sorted({str(w.message) for w in caught if "graph JVP" in str(w.message)})
                acc, auroc = s.get("test_accuracy"), s.get("detection_auroc")
                ok = s.get("status") == "finished" and acc is not None
                summary.add(check, ok, f"{last:.0f} s, test acc {100 * (acc or float('nan')):.2f}%, AUROC "
                            f"{float('nan') if auroc is None else auroc:.3f}, JVP path: {jvp_path(fell, walks[0])}"
                            + (f" (warned: {'; '.join(ours)[:200]})" if ours else ""))
            except Exception as exc:  # noqa: BLE001
                last = time.monotonic() - t0
                traceback.print_exc(limit=3)
                summary.add(check, False, f"after {last:.0f} s: {first_line(exc)}")
            finally:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    summary.add(f"autograd nodes without a graph-JVP rule on {args.device} (WRN probe, every method)", not missing,
                ", ".join(sorted(missing)) or "none")


# -- main ------------------------------------------------------------------------------------------------
def _prepare(args: argparse.Namespace) -> int:
    try:
        m = prep.prepare(ROOT, data_dir=args.data_dir, train_per_class=args.train_per_class,
                         test_per_class=args.test_per_class, wheels=not args.no_wheels)
        cmd = prep.device_command()
    except prep.PrepareError as err:
        print(f"gpu_check --prepare: {err}", file=sys.stderr)
        return 2
    print(f"wrote {ROOT / prep.PREPARED} in {m['seconds']} s: {m['train_images']} training and {m['test_images']} "
          f"test images ({m['data_bytes'] / 2**20:.1f} MiB), wheels: {', '.join(m['wheels']) or 'none'}; "
          f"folder {m['total_bytes'] / 2**20:.1f} MiB in all; {m['ignored']}")
    again = prep.device_command(budget=180, timeout=220, extra="--phases 3")
    print(f"\ndevice command ({len(cmd)} characters):\n{cmd}\n\ncarry: {json.dumps(prep.carry_list())}\n\n"
          f"a second try on the still-warm machine (one phase again, e.g. 3, on what is left of the 15 minutes):\n{again}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true", help="write .gpu/ (data subset, wheels) and print the device command")
    ap.add_argument("--train-per-class", type=int, default=800, help="--prepare: training images per class (800)")
    ap.add_argument("--test-per-class", type=int, default=200, help="--prepare: test images per class (200)")
    ap.add_argument("--no-wheels", action="store_true", help="--prepare: no wheel download")
    ap.add_argument("--prepared", type=Path, default=None, help=f"the prepared folder (default {prep.PREPARED}/ if there)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small models and a CIFAR subset (a CPU check of the script)")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    ap.add_argument("--phases", default="1,2,3", help="comma list of the phases to run (default 1,2,3)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--data-dir", default=None, help="folder with cifar10-train-jpeg.zip / cifar10-test-jpeg.zip")
    ap.add_argument("--out", type=Path, default=None, help="summary and logs (default $OUT, else .gpu/out)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--resume-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare:
        return _prepare(args)
    if args.prepared is None and prep.read_manifest(ROOT / prep.PREPARED) is not None:
        args.prepared = ROOT / prep.PREPARED
    if args.prepared is not None:
        args.prepared = (args.prepared if args.prepared.is_absolute() else Path.cwd() / args.prepared).resolve()
        if prep.read_manifest(args.prepared) is None:
            ap.error(f"--prepared {args.prepared}: no {prep.MANIFEST} (run --prepare first)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume_child:
        resume_child(args)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available (use --device cpu --quick)")
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases or phases - {"1", "2", "3"}:
        ap.error("--phases takes a comma list of 1, 2, 3")
    out = args.out or Path(os.environ.get("OUT") or ROOT / prep.PREPARED / "out")
    out.mkdir(parents=True, exist_ok=True)
    args.out = out.resolve()
    signal.signal(signal.SIGTERM, _on_sigterm)
    clock = Clock(args.budget)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    title = (f"torch {torch.__version__}, {args.device} ({dev}), budget {args.budget:.0f} s"
             f"{', quick' if args.quick else ''}")
    summary = Summary(args.out / SUMMARY_FILE, title)
    print(f"gpu_check: {title}, cudnn {torch.backends.cudnn.version() if torch.cuda.is_available() else '-'}; "
          f"prepared {args.prepared or 'none'}; summary and logs in {args.out}", flush=True)
    try:
        if args.prepared is not None:
            got = prep.install_missing_wheels(args.prepared / "wheels", Path(tempfile.gettempdir()) / "gpu_check_site")
            print(f"carried wheels unpacked: {', '.join(got) or 'none needed'}", flush=True)
        share = {"1": 0.30, "2": 0.25, "3": 0.45}
        total = sum(share[p] for p in phases)
        if "1" in phases:
            guarded(summary, "phase 1 (tests)", lambda: phase_tests(args, clock, share["1"] / total * clock.left()
                                                                    - 20, summary))
            guarded(summary, "phase 1b (float32 graph JVP)", lambda: phase_f32_jvp(args, clock, summary))
        if "2" in phases:
            rest = sum(share[p] for p in phases if p >= "2")
            guarded(summary, "phase 2 (meta_speed)",
                    lambda: phase_speed(args, clock, share["2"] / rest * clock.left(), summary))
        if "3" in phases:
            guarded(summary, "phase 3 (training runs)",
                    lambda: phase_methods(args, clock, max(30.0, clock.left() - 5), summary))
        if torch.cuda.device_count() > 1:  # more than one GPU: the data-parallel scaling too
            guarded(summary, "phase 4 (ddp_scaling)", lambda: phase_ddp(args, clock, summary))
    except Terminated:
        summary.note = (f"stopped by SIGTERM after {time.monotonic() - clock.t0:.0f} s during {summary.running}: "
                        "the checks above finished")
        summary.write()
    print(f"\n{clock.stamp()} done\n{summary.block()}", end="", flush=True)
    print(f"(also in {summary.path})")
    return 1 if summary.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
