"""Plant plausible bugs in the methods one at a time and report which the test suite catches.

Each entry of :data:`BUGS` is ``(file, original snippet, mutated snippet, description, tests)``: the
snippet must occur exactly once in the file; the mutated file is written in place, the given pytest
selection runs (``-x``, default markers, one thread, ``PYTHONPATH=src``), and the original bytes are
written back in a ``finally`` block (also on Ctrl-C / SIGTERM, and checked against their hash at the
end). A bug is *caught* when pytest exits with failures (rc 1); the first failing test is shown::

    python benchmarks/plant_bugs.py              # every bug
    python benchmarks/plant_bugs.py --only 3 7   # some of them (by number)
    python benchmarks/plant_bugs.py --list
    python benchmarks/plant_bugs.py --copy       # plant in a temporary copy of src/ and tests/ (the
                                                 # working tree is never touched: keep editing meanwhile)

Issue 20's list (the five the suite missed) comes first, then a dozen more.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["BUGS", "main"]

ROOT = Path(__file__).resolve().parents[1]
M, T = "src/noisylabels/", "tests/"

#: (file, original, mutated, description, pytest selection)
BUGS: list[tuple[str, str, str, str, list[str]]] = [
    # -- issue 20's five -----------------------------------------------------------------------------
    (M + "methods/narl.py", "        m = margin(z, y)\n        lam = self.meta_net(m)",
     "        m = margin(z.softmax(1), y)\n        lam = self.meta_net(m)",
     "NARL: adjuster input on softmax probabilities, not the logit margin (Sec. 3.2)", [T + "methods/test_narl.py"]),
    (M + "methods/narl.py", "        super().__init__(meta_interval=meta_interval, **options)",
     "        super().__init__(meta_interval=meta_interval, **{'delayed': True, **options})",
     "NARL: real step with theta^(t) (delayed) instead of theta^(t+1) (Eq. 12)", [T + "methods/test_narl.py"]),
    (M + "meta/engine.py", "weight, t_j = float(gamma) ** (j + offset),", "weight, t_j = float(gamma) ** j,",
     "FPMG: discount exponent gamma**j instead of gamma**(j + offset) (Eq. 11)", [T + "meta/test_lookahead.py"]),
    (M + "meta/schedule.py", "num = num + ((1.0 - scale[n]) * v * gp.float()).sum()", "num = num + (v * gp.float()).sum()",
     "MLC: k-step discount without its (1 - s) factor", [T + "methods/test_mlc.py"]),
    (M + "methods/emlc.py", "        return gate_mix(w, labels, F.softmax(upcast(logits), dim=1)), w, logits",
     "        return F.softmax(upcast(logits), dim=1), w, logits",
     "EMLC: gate removed (q = the teacher's prediction)", [T + "methods/test_emlc.py"]),
    # -- a dozen more ----------------------------------------------------------------------------------
    (M + "meta/engine.py", "        obj = (loss_grad * u).sum().neg()", "        obj = (loss_grad * u).sum()",
     "engine: sign of the one-step contribution (meta-gradient ascends)", [T + "meta/test_engine.py"]),
    (M + "meta/engine.py", "tangent = {n: g.mul(at.scale[n]) for n, g in zip(names, v) if g is not None}",
     "tangent = {n: g for n, g in zip(names, v) if g is not None}",
     "engine: tangent without the lr x direction scale", [T + "meta/test_engine.py"]),
    (M + "meta/virtual_step.py", "        c = 1.0 + momentum", "        c = 1.0",
     "virtual step: Nesterov direction scale 1 instead of 1 + momentum", [T + "meta/test_engine.py"]),
    (M + "meta/virtual_step.py", "        c = 1.0 if first_step else 1.0 - dampening", "        c = 1.0 - dampening",
     "virtual step: dampening applied at the first momentum step (torch sets buf = g)",
     [T + "meta/test_engine.py", T + "meta/test_lookahead.py"]),
    (M + "meta/virtual_step.py", "            dg = (sigma + wd) * w + (sigma if t == tau else 0.0)",
     "            dg = (sigma - wd) * w + (sigma if t == tau else 0.0)",
     "FPMG discounts: weight-decay sign in the look-back", [T + "meta/test_lookahead.py"]),
    (M + "meta/virtual_step.py", "                d = dg + mom * m if nest else m", "                d = m",
     "FPMG discounts: Nesterov look-back as heavy ball", [T + "meta/test_lookahead.py"]),
    (M + "meta/engine.py", "+ ((live.get(n),) if offset == 1 else ())", "+ ()",
     "FPMG discounts: the live step left out of the window (off by one step)", [T + "meta/test_lookahead.py"]),
    (M + "methods/narl.py", "    z = logits.detach()\n    z_y = z.gather", "    z = logits\n    z_y = z.gather",
     "NARL: margin not detached (the adjuster's input back-propagates into the classifier)",
     [T + "methods/test_narl.py"]),
    (M + "methods/narl.py", "    return z_y - others.amax(dim=1)", "    return z_y - z.amax(dim=1)",
     "NARL: margin's max over all classes, the label included", [T + "methods/test_narl.py"]),
    (M + "methods/label_correction.py", "        return soft_cross_entropy(z, q.to(z.dtype))",
     "        return -(F.softmax(z, 1) * torch.log(q.to(z.dtype).clamp_min(1e-12))).sum(1)",
     "label correction: CE(p, q) for CE(q, p) (swapped roles of student and teacher)",
     [T + "methods/test_emlc.py", T + "methods/test_label_correction.py"]),
    (M + "methods/emlc.py", "    pos = torch.arange(0, 2 * (n // 2), 2, device=labels.device)",
     "    pos = torch.arange(1, 2 * (n // 2), 2, device=labels.device)",
     "EMLC: corrupts the odd positions, n//2 - 1 of them (index off by one)", [T + "methods/test_emlc.py"]),
    (M + "methods/emlc.py", "            target = (fake == mb.y).float()", "            target = (fake != mb.y).float()",
     "EMLC: gate BCE target inverted (1 = corrupted)", [T + "methods/test_emlc.py"]),
    (M + "meta/schedule.py", "[g + gamma * a for g, a in zip(grads, self.acc)]",
     "[gamma * g + a for g, a in zip(grads, self.acc)]",
     "MLC: k-step accumulation discounts the new gradient instead of the old (swapped roles)",
     [T + "methods/test_mlc.py"]),
    (M + "meta/schedule.py", "        return step % self.k == self.k - 1", "        return step % self.k == 0",
     "meta base: k-step window closes at t mod k = 0 (off by one)", [T + "methods/test_emlc.py"]),
    (M + "methods/mwnet.py", "        w = self.meta_net(ce.detach())", "        w = self.meta_net(ce)",
     "MW-Net: weight net input not detached", [T + "methods/test_mwnet.py"]),
    (M + "methods/l2rw.py", "        r = raw.clamp_min(0)", "        r = raw.abs()",
     "L2RW: |w| instead of rectified max(w, 0) (Eq. 12)", [T + "methods/test_l2rw_l2b.py"]),
    # -- Co-teaching / Co-teaching+ (issue 22) ---------------------------------------------------------
    (M + "methods/coteaching.py", "loss1 = self.exchange_update(ctx, l1, keep2, net=None)",
     "loss1 = self.exchange_update(ctx, l1, keep1, net=None)",
     "Co-teaching: f updated on its own small-loss set, not its peer's (swapped roles, steps 6-7)",
     [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", "loss2 = self.exchange_update(ctx, l2, keep1, net=peer)",
     "loss2 = self.exchange_update(ctx, l2, keep2, net=peer)",
     "Co-teaching: the peer g updated on its own small-loss set (swapped roles, step 7)",
     [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", "return None if ctx.epoch < self.init_epochs else disagreement(z1, z2)",
     "return None", "Co-teaching+: no disagreement restriction (plain Co-teaching)", [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", 'detection = ("loss", 1.0)', 'detection = ("loss", -1.0)',
     "Co-teaching: detection sign (small loss ranked suspicious)", [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", "return 1.0 - min(epoch / num_gradual * tau, tau)",
     "return 1.0 - min((epoch + 1) / num_gradual * tau, tau)",
     "Co-teaching: R(T) one epoch ahead (off by one)", [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", "return logits_1.argmax(1) != logits_2.argmax(1)",
     "return logits_1.argmax(1) == logits_2.argmax(1)",
     "Co-teaching+: agreement set instead of disagreement (Eq. 1)", [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", 'k = math.ceil(rate * n - 1e-9) if schedule == "paper" else int(rate * n + 1e-9)',
     "k = int(rate * n + 1e-9)", "Co-teaching: floor(R |D|) instead of the paper's |D'| >= R |D|",
     [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", "return None if ctx.epoch < self.init_epochs else disagreement(z1, z2)",
     "return disagreement(z1, z2)", "Co-teaching+: init_epochs ignored", [T + "methods/test_coteaching.py"]),
    (M + "methods/coteaching.py", "        forget = min(forget, (1.0 + (epoch - num_gradual) / (epochs - num_gradual)) * tau)",
     "        forget = min(forget, tau)", "Co-teaching+: lambda(e) without its growth after E_k (Alg. 1 step 9)",
     [T + "methods/test_coteaching.py"]),
    (M + "detect/forget_rate.py", 'out["method"]["forget_rate"] = min(max(rate, 0.0), 0.99)',
     'out["method"]["forget_rate"] = float(cfg["noise"]["rate"])',
     "forget_rate=estimate: the configured noise rate reaches the method instead of the estimate",
     [T + "methods/test_coteaching.py"]),
    # -- ELR (issue 22) ------------------------------------------------------------------------------
    (M + "methods/elr.py", "        losses = F.cross_entropy(_float(z), y, reduction=\"none\") + self.lam * reg",
     "        losses = F.cross_entropy(_float(z), y, reduction=\"none\") - self.lam * reg",
     "ELR: regulariser sign (pushes p away from the early-learning target)", [T + "methods/test_elr.py"]),
    (M + "methods/elr.py", "    return beta * target + (1.0 - beta) * probs.to(target.dtype)",
     "    return (1.0 - beta) * target + beta * probs.to(target.dtype)",
     "ELR: temporal ensemble with beta and 1 - beta swapped", [T + "methods/test_elr.py"]),
    (M + "methods/elr.py", "        reg = elr_regularizer(z, t, clamp=self.clamp)",
     "        reg = elr_regularizer(z, prev, clamp=self.clamp)",
     "ELR: regulariser on the target before this step's update (off by one update)", [T + "methods/test_elr.py"]),
    (M + "methods/elr.py", "    rest = (1.0 - t.sum(1, keepdim=True)).clamp_min(0.0)",
     "    rest = torch.zeros_like(t[:, :1])",
     "ELR: exact regulariser drops the (1 - sum t) term of a target that has not converged", [T + "methods/test_elr.py"]),
    (M + "methods/elr.py", "    p = torch.exp(z - lse).masked_fill(top, 0.0)", "    p = torch.exp(z - lse)",
     "ELR: log(1 - p) through log1p also at the top class (log 0 in the branch not taken)", [T + "methods/test_elr.py"]),
    (M + "methods/elr.py", "    detection = (\"target_given\", -1.0)", "    detection = (\"target_given\", 1.0)",
     "ELR: detection direction (labels the target agrees with ranked first)", [T + "methods/test_elr.py"]),
    (M + "methods/elr.py", "        reg = elr_regularizer(z, t, clamp=self.clamp)",
     "        reg = elr_regularizer(z, F.one_hot(y, t.shape[1]).to(t), clamp=self.clamp)",
     "ELR: regulariser towards the given label instead of the target (swapped roles)", [T + "methods/test_elr.py"]),
    (M + "methods/elr_plus.py", "            teacher, average = self.net(\"peer_ema\").model, self.net(\"ema\").model",
     "            teacher, average = self.net(\"ema\").model, self.net(\"ema\").model",
     "ELR+: the model's targets from its own weight average, not the peer's (swapped roles)", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "t = temporal_ensemble(table[index], target_probs(teacher(x))",
     "t = temporal_ensemble(table[index], target_probs(model(x))",
     "ELR+: targets from the live network instead of the weight average", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "+ weight * elr_regularizer(zf, q, clamp=self.clamp)", "- weight * elr_regularizer(zf, q, clamp=self.clamp)",
     "ELR+: regulariser sign", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "y_mix, q = mixed.targets[:, :k], mixed.targets[:, k:]", "y_mix, q = mixed.targets[:, :k], t",
     "ELR+: targets not mixed with the inputs (q = t of the un-mixed sample)", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "pa.mul_(a).add_(p.detach(), alpha=1.0 - a)", "pa.mul_(1.0 - a).add_(p.detach(), alpha=a)",
     "ELR+: weight average with a and 1 - a swapped", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "        step = ctx.step + 1  #", "        step = ctx.step  #",
     "ELR+: ramp-ups one step behind the official code's counter (off by one)", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "return Ensemble([ctx.model, self.net(\"peer\").model], combine=\"logits\")",
     "return Ensemble([self.net(\"ema\").model, self.net(\"peer_ema\").model], combine=\"logits\")",
     "ELR+: evaluates the weight averages instead of the trained networks", [T + "methods/test_elr_plus.py"]),
    (M + "methods/elr_plus.py", "generator=gen, max_lambda=True)", "generator=gen, max_lambda=False)",
     "ELR+: mixup weight lam instead of the code's max(lam, 1 - lam)", [T + "methods/test_elr_plus.py"]),
]

_saved: dict[Path, bytes] = {}


def _restore() -> None:
    for path, data in list(_saved.items()):
        path.write_bytes(data)
        _saved.pop(path)


def _on_signal(signum, frame):  # noqa: ARG001
    _restore()
    raise SystemExit(130)


def run_one(k: int, bug: tuple[str, str, str, str, list[str]], *, timeout: int, root: Path = ROOT) -> tuple[str, str]:
    """Plant bug ``k`` under ``root``, run its tests, restore; ``(caught?, first failing test or note)``."""
    rel, orig, mutated, _, tests = bug
    path = root / rel
    data = path.read_bytes()
    text = data.decode()
    if text.count(orig) != 1:
        return "ERROR", f"snippet found {text.count(orig)} times in {rel}"
    _saved[path] = data
    try:
        path.write_text(text.replace(orig, mutated))
        env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                  cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", f"> {timeout} s"
    finally:
        _restore()
    out = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, flags=re.M)
    if proc.returncode == 0:
        return "no", "-"
    if proc.returncode == 1 and failed:
        return "yes", failed[0]
    return "error", f"pytest rc {proc.returncode}: {(failed or out.strip().splitlines()[-1:] or ['?'])[0]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=int, nargs="*", help="bug numbers (1-based)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--copy", action="store_true", help="plant in a temporary copy (src/, tests/, pyproject.toml)")
    args = ap.parse_args(argv)
    chosen = [k for k in range(1, len(BUGS) + 1) if not args.only or k in args.only]
    if args.list:
        for k in chosen:
            print(f"{k:2d}. {BUGS[k - 1][3]}  ({BUGS[k - 1][0]})")
        return 0
    root = ROOT
    if args.copy:
        root = Path(tempfile.mkdtemp(prefix="plant_bugs_"))
        for part in ("src", "tests"):
            shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    hashes = {p: hashlib.sha256((root / p).read_bytes()).hexdigest() for p in {BUGS[k - 1][0] for k in chosen}}
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rows = []
    try:
        for k in chosen:
            caught, by = run_one(k, BUGS[k - 1], timeout=args.timeout, root=root)
            rows.append((k, BUGS[k - 1][3], caught, by))
            print(f"{k:2d} | {BUGS[k - 1][3]} | {caught} | {by}", flush=True)
    finally:
        _restore()
        for p, h in hashes.items():
            assert hashlib.sha256((root / p).read_bytes()).hexdigest() == h, f"{p} was not restored"
        if args.copy:
            shutil.rmtree(root, ignore_errors=True)
    print("\n| # | planted bug | caught? | by |\n|---|---|---|---|")
    for k, desc, caught, by in rows:
        print(f"| {k} | {desc} | {caught} | `{by}` |")
    n = sum(r[2] == "yes" for r in rows)
    print(f"\ncaught {n} of {len(rows)}")
    return 0 if n == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
