"""FPMG (EMLC Eq. 11) against the exact unrolled k-step meta-gradient under torch SGD settings.

A student whose training loss has the identity Hessian (logits z_i = w, loss 1/2 ||z||^2 - z^T B q_alpha),
an EMLC teacher, k = 4 steps (float64). The exact gradient is autograd through the k SGD steps written
out; FPMG is the live step plus the stored steps, discounted either by EMLC's plain-SGD
``gamma = 1 - eta`` or by the discounts derived for the optimiser
(:func:`noisylabels.meta.virtual_step.lookahead_weights`). Prints the relative error and cosine of each::

    PYTHONPATH=src python benchmarks/fpmg_momentum.py
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.meta import StoredStep, lookahead_contributions
from noisylabels.meta.engine import meta_gradient_jvp
from noisylabels.methods.emlc import Teacher
from noisylabels.models.mlp import MLP

__all__ = ["main"]

K, D, N, M = 3, 4, 6, 5
SETTINGS = {"plain": (0.0, 0.0, 0.0, False), "weight decay 0.05": (0.0, 0.0, 0.05, False),
            "momentum 0.9": (0.9, 0.0, 0.0, False), "momentum 0.9 + wd 0.05": (0.9, 0.0, 0.05, False),
            "Nesterov 0.9 + wd 0.05": (0.9, 0.0, 0.05, True), "momentum 0.9, dampening 0.3, wd 0.05": (0.9, 0.3, 0.05, False)}


class _Vector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(K, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w.expand(x.shape[0], -1)


def _flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def compare(mom: float, damp: float, wd: float, nest: bool, *, k: int = 4, lr: float = 0.2) -> dict[str, tuple]:
    torch.manual_seed(3)
    student = _Vector()
    teacher = Teacher(MLP(in_features=D, num_classes=K, hidden=(4,)), K, embedding_dim=3, hidden=4).double()
    bm = torch.randn(K, K, dtype=torch.float64)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=mom, dampening=damp, weight_decay=wd, nesterov=nest)
    batches = [(torch.randn(N, D, dtype=torch.float64), torch.randint(0, K, (N,))) for _ in range(k)]
    mx, my = torch.randn(M, D, dtype=torch.float64), torch.randint(0, K, (M,))

    def inner(z, x, y):
        return 0.5 * (z ** 2).sum(1) - (z * (teacher(x, y)[0] @ bm.T)).sum(1)

    def ce(z, y):
        return F.cross_entropy(z, y, reduction="none")

    if mom:  # a momentum buffer from an earlier step
        opt.zero_grad()
        (0.5 * (student(batches[0][0]) ** 2).sum(1)).mean().backward()
        opt.step()
    buf = opt.state[student.w].get("momentum_buffer") if opt.state else None
    buf = None if buf is None else buf.detach().clone()
    w = student.w.detach().clone().requires_grad_()
    for x, y in batches:  # torch.optim.SGD's update, differentiable
        g = torch.autograd.grad(inner(w.expand(N, -1), x, y).mean(), w, create_graph=True)[0] + wd * w
        if mom:
            buf = g if buf is None else mom * buf + (1 - damp) * g
            g = g + mom * buf if nest else buf
        w = w - lr * g
    exact = _flat(torch.autograd.grad(ce(w.expand(M, -1), my).mean(), list(teacher.parameters())))
    steps = []
    for x, y in batches[:-1]:
        steps.append(StoredStep.capture(student, x=x, y=y, index=torch.arange(N), optimizer=opt))
        opt.zero_grad()
        with torch.no_grad():
            q = teacher(x, y)[0]
        (0.5 * (student(x) ** 2).sum(1) - (student(x) * (q @ bm.T)).sum(1)).mean().backward()
        opt.step()
    x, y = batches[-1]
    phi = list(teacher.parameters())
    live = meta_gradient_jvp(student, opt, x=x, y=y, loss_layer=lambda z, t: inner(z, x, t), meta_x=mx, meta_y=my,
                             meta_loss_fn=ce, phi=phi, reuse_forward=False, jvp_backend="func")
    out = {}
    for how, kw in (("gamma = 1 - eta", {"gamma": 1 - lr}), ("SGD discounts", {"optimizer": opt})):
        extra = lookahead_contributions(student, steps=steps, tangent=live.tangent, phi=phi, offset=1,
                                        loss_layer=lambda z, st: inner(z, st.x, st.y), **kw)
        got = _flat(live.meta_grads) + _flat(extra)
        out[how] = (float((got - exact).norm() / exact.norm()), float(F.cosine_similarity(got, exact, 0)))
    return out


def main() -> None:
    print("| SGD setting (k = 4, lr 0.2) | gamma = 1 - eta: rel. error (cosine) | SGD discounts: rel. error (cosine) |")
    print("|---|---|---|")
    for name, s in SETTINGS.items():
        r = compare(*s)
        a, b = r["gamma = 1 - eta"], r["SGD discounts"]
        print(f"| {name} | {a[0]:.3g} ({a[1]:.6f}) | {b[0]:.2g} ({b[1]:.6f}) |")


if __name__ == "__main__":
    main()
