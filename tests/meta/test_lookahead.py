"""EMLC's meta-gradients on the engine (Taraday & Baskin 2023): Prop. 3, Eq. 10, Eq. 11 / FPMG.

Tiny float64 student and teacher; every identity is checked against an independent computation
(explicit Jacobians, a double backward through the unrolled steps, central finite differences).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from noisylabels.errors import UserError
from noisylabels.meta import StoredStep, lookahead_contributions, meta_tangent
from noisylabels.meta.engine import meta_gradient_double_backward, meta_gradient_jvp
from noisylabels.meta.virtual_step import VirtualStep, optimizer_virtual_step
from noisylabels.methods.emlc import Teacher
from noisylabels.methods.label_correction import soft_cross_entropy
from noisylabels.models.mlp import MLP

K, D, N, M = 3, 4, 6, 5


def _problem(seed=0, momentum=0.0, weight_decay=0.0):
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(D, 5), nn.Tanh(), nn.Linear(5, K)).double()
    teacher = Teacher(MLP(in_features=D, num_classes=K, hidden=(4,)), K, embedding_dim=3, hidden=4).double()
    opt = torch.optim.SGD(student.parameters(), lr=0.3, momentum=momentum, weight_decay=weight_decay)
    x, y = torch.randn(N, D, dtype=torch.float64), torch.randint(0, K, (N,))
    mx, my = torch.randn(M, D, dtype=torch.float64), torch.randint(0, K, (M,))
    return student, teacher, opt, x, y, mx, my


def _layer(teacher, x):
    return lambda z, y: soft_cross_entropy(z, teacher(x, y)[0])


def _ce(z, y):
    return F.cross_entropy(z, y, reduction="none")


def _flat(params):
    return torch.cat([p.reshape(-1) for p in params])


def _unflat(vec, like):
    out, i = [], 0
    for p in like:
        out.append(vec[i:i + p.numel()].view_as(p))
        i += p.numel()
    return out


def _fcall(module, names, like, vec, *args):
    return torch.func.functional_call(module, dict(zip(names, _unflat(vec, like))), args)


def test_prop3_mixed_second_derivative_factorises():
    """Eq. 9: d2 l_i / dw dalpha = -J_w(log p_i)^T J_alpha(q_i), for every sample."""
    student, teacher, _, x, y, _, _ = _problem()
    wn, wl = zip(*student.named_parameters())
    an, al = zip(*teacher.named_parameters())
    w0, a0 = _flat(wl).detach(), _flat(al).detach()
    for i in (0, 3):
        xi, yi = x[i:i + 1], y[i:i + 1]

        def loss(w, a):
            return soft_cross_entropy(_fcall(student, wn, wl, w, xi), _fcall(teacher, an, al, a, xi, yi)[0]).sum()

        mixed = torch.autograd.functional.jacobian(lambda a: torch.autograd.functional.jacobian(
            lambda w: loss(w, a), w0, create_graph=True), a0)  # (|w|, |alpha|)
        jw = torch.autograd.functional.jacobian(lambda w: F.log_softmax(_fcall(student, wn, wl, w, xi), 1)[0], w0)
        ja = torch.autograd.functional.jacobian(lambda a: _fcall(teacher, an, al, a, xi, yi)[0][0], a0)
        torch.testing.assert_close(mixed, -jw.T @ ja, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_eq10_engine_equals_double_backward_and_finite_differences(momentum):
    """The k = 1 meta-gradient through the real SGD step: engine JVP = double backward of
    L_clean(w - eta grad L~(w, alpha)) = central finite differences in alpha."""
    student, teacher, opt, x, y, mx, my = _problem(momentum=momentum, weight_decay=1e-3)
    if momentum:  # a momentum buffer from one earlier step
        opt.zero_grad()
        _ce(student(x), y).mean().backward()
        opt.step()
    phi = list(teacher.parameters())
    kw = dict(x=x, y=y, loss_layer=_layer(teacher, x), meta_x=mx, meta_y=my, meta_loss_fn=_ce, phi=phi,
              reuse_forward=False)
    jvp = meta_gradient_jvp(student, opt, **kw).meta_grads
    db = meta_gradient_double_backward(student, opt, **kw).meta_grads
    for a, b in zip(jvp, db):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)

    def meta_loss_at(alpha_vec):
        with torch.no_grad():
            for p, v in zip(phi, _unflat(alpha_vec, phi)):
                p.copy_(v)
        return float(meta_gradient_jvp(student, opt, **kw).meta_loss)

    a0 = _flat(phi).detach().clone()
    fd = torch.zeros_like(a0)
    for j in range(0, len(a0), 7):  # every 7th coordinate
        e = torch.zeros_like(a0)
        e[j] = 1e-5
        fd[j] = (meta_loss_at(a0 + e) - meta_loss_at(a0 - e)) / 2e-5
    meta_loss_at(a0)
    g = _flat(jvp)
    sel = torch.arange(0, len(a0), 7)
    torch.testing.assert_close(g[sel], fd[sel], rtol=1e-5, atol=1e-8)


def test_logit_jvp_equals_log_softmax_jvp_because_q_sums_to_one():
    """(J_w z . t)^T J_alpha q = (J_w log p . t)^T J_alpha q: the columns of J_alpha q sum to zero."""
    student, teacher, opt, x, y, mx, my = _problem()
    wn, wl = zip(*student.named_parameters())
    t = tuple(torch.randn_like(p) for p in wl)

    def vjp_of(fn):
        _, u = torch.func.jvp(lambda *w: fn(torch.func.functional_call(student, dict(zip(wn, w)), (x,))),
                              tuple(p.detach() for p in wl), t)
        q = teacher(x, y)[0]
        return torch.autograd.grad((u.detach() * q).sum(), list(teacher.parameters()))

    for a, b in zip(vjp_of(lambda z: z), vjp_of(lambda z: F.log_softmax(z, 1))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # and Eq. 10 written out (plain SGD: t = eta g_w) is the engine's number
    res = meta_gradient_jvp(student, opt, x=x, y=y, loss_layer=_layer(teacher, x), meta_x=mx, meta_y=my,
                            meta_loss_fn=_ce, phi=list(teacher.parameters()), reuse_forward=False)
    eta = opt.param_groups[0]["lr"]
    _, u = torch.func.jvp(lambda *w: F.log_softmax(torch.func.functional_call(student, dict(zip(wn, w)), (x,)), 1),
                          tuple(p.detach() for p in wl), tuple(res.tangent[n] / eta for n in wn))
    eq10 = torch.autograd.grad((eta / N) * (u * teacher(x, y)[0]).sum(), list(teacher.parameters()))
    for a, b in zip(res.meta_grads, eq10):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _k_steps(student, teacher, opt, batches):
    """Plain SGD student steps on the teacher's soft labels (alpha fixed): the stored steps."""
    steps = []
    for x, y in batches:
        steps.append(StoredStep.capture(student, x=x, y=y, index=torch.arange(len(y))))
        opt.zero_grad()
        with torch.no_grad():
            q = teacher(x, y)[0]
        soft_cross_entropy(student(x), q).mean().backward()
        opt.step()
    return steps


def test_eq11_fpmg_equals_the_explicit_discounted_sum_and_eq10_at_k1():
    student, teacher, opt, x, y, mx, my = _problem(seed=1)
    torch.manual_seed(5)
    batches = [(torch.randn(N, D, dtype=torch.float64), torch.randint(0, K, (N,))) for _ in range(3)]
    steps = _k_steps(student, teacher, opt, batches)
    eta, gamma = opt.param_groups[0]["lr"], 1 - opt.param_groups[0]["lr"]
    params = {n: p.detach() for n, p in student.named_parameters()}
    at = VirtualStep(params=params, scale={n: eta for n in params})
    _, tangent = meta_tangent(student, at, meta_x=mx, meta_y=my, meta_loss_fn=_ce)
    phi = list(teacher.parameters())
    fpmg = lookahead_contributions(student, steps=steps, tangent=tangent, phi=phi, gamma=gamma,
                                   loss_layer=lambda z, st: soft_cross_entropy(z, teacher(st.x, st.y)[0]))
    # explicit: sum_tau gamma^(t - tau) (eta / n) sum_i g_w^T J_w(tau)(i)^T J_alpha(i)
    wn = list(params)
    gw = _flat([tangent[n] / eta for n in wn])
    an, al = zip(*teacher.named_parameters())
    a0 = _flat(al).detach()
    total = torch.zeros_like(a0)
    for j, st in enumerate(reversed(steps)):
        wl = [st.params[n] for n in wn]
        jw = torch.autograd.functional.jacobian(
            lambda w: F.log_softmax(_fcall(student, wn, wl, w, st.x), 1), _flat(wl))  # (n, K, |w|)
        ja = torch.autograd.functional.jacobian(lambda a: _fcall(teacher, an, al, a, st.x, st.y)[0], a0)  # (n, K, |a|)
        total += gamma ** j * (eta / N) * torch.einsum("nk,nka->a", jw @ gw, ja)
    torch.testing.assert_close(_flat(fpmg), total, rtol=1e-9, atol=1e-12)

    # k = 1: FPMG over the one stored step is Eq. 10 (the engine's one-step meta-gradient)
    s2, t2, o2, x2, y2, mx2, my2 = _problem(seed=2)
    one = meta_gradient_jvp(s2, o2, x=x2, y=y2, loss_layer=_layer(t2, x2), meta_x=mx2, meta_y=my2, meta_loss_fn=_ce,
                            phi=list(t2.parameters()), reuse_forward=False)
    st = _k_steps(s2, t2, o2, [(x2, y2)])
    f1 = lookahead_contributions(s2, steps=st, tangent=one.tangent, phi=list(t2.parameters()), gamma=0.5,
                                 loss_layer=lambda z, s: soft_cross_entropy(z, t2(s.x, s.y)[0]))
    for a, b in zip(f1, one.meta_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


class _Vector(nn.Module):
    """z_i = w for every sample: logits linear in w (J_w z_i = I)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(K, dtype=torch.float64))

    def forward(self, x):
        return self.w.expand(x.shape[0], -1)


def test_eq11_is_the_exact_unrolled_gradient_when_the_inner_hessian_is_the_identity():
    """Inner loss l_i = 1/2 ||z_i||^2 - z_i^T B q_alpha(x_i): H_ww = I, so gamma = 1 - eta is exact."""
    torch.manual_seed(3)
    student, teacher = _Vector(), Teacher(MLP(in_features=D, num_classes=K, hidden=(4,)), K, embedding_dim=3,
                                          hidden=4).double()
    B = torch.randn(K, K, dtype=torch.float64)
    eta, k = 0.2, 4
    opt = torch.optim.SGD(student.parameters(), lr=eta)
    batches = [(torch.randn(N, D, dtype=torch.float64), torch.randint(0, K, (N,))) for _ in range(k)]
    mx, my = torch.randn(M, D, dtype=torch.float64), torch.randint(0, K, (M,))

    def inner(z, x, y, q=None):
        q = teacher(x, y)[0] if q is None else q
        return 0.5 * (z ** 2).sum(1) - (z * (q @ B.T)).sum(1)

    # exact: unroll k differentiable SGD steps from w0, differentiate L_clean(w_k) in alpha
    w = student.w.detach().clone()
    wk = w
    for x, y in batches:
        g, = torch.autograd.grad(inner(wk.expand(N, -1), x, y).mean(), wk, create_graph=True) if wk.requires_grad \
            else (None,)
        if g is None:  # first step: w0 is a constant
            w_var = wk.clone().requires_grad_()
            g, = torch.autograd.grad(inner(w_var.expand(N, -1), x, y).mean(), w_var, create_graph=True)
        wk = wk - eta * g
    exact = torch.autograd.grad(_ce(wk.expand(M, -1), my).mean(), list(teacher.parameters()))
    # FPMG over the k stored steps of the same trajectory
    steps = []
    for x, y in batches:
        steps.append(StoredStep.capture(student, x=x, y=y, index=torch.arange(N)))
        opt.zero_grad()
        with torch.no_grad():
            q = teacher(x, y)[0]
        inner(student(x), x, y, q).mean().backward()
        opt.step()
    torch.testing.assert_close(student.w.detach(), wk.detach(), rtol=1e-12, atol=1e-12)
    params = {"w": student.w.detach()}
    _, tangent = meta_tangent(student, VirtualStep(params=params, scale={"w": eta}), meta_x=mx, meta_y=my,
                              meta_loss_fn=_ce)
    fpmg = lookahead_contributions(student, steps=steps, tangent=tangent, phi=list(teacher.parameters()),
                                   gamma=1 - eta, loss_layer=lambda z, st: inner(z, st.x, st.y))
    for a, b in zip(fpmg, exact):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_virtual_step_of_the_engine_is_the_real_student_step():
    """Algorithm 1 / delayed: the tangent is built at exactly the student's next weights."""
    student, teacher, opt, x, y, mx, my = _problem(momentum=0.9, weight_decay=5e-4)
    res = meta_gradient_jvp(student, opt, x=x, y=y, loss_layer=_layer(teacher, x), meta_x=mx, meta_y=my,
                            meta_loss_fn=_ce, phi=list(teacher.parameters()))
    vs = optimizer_virtual_step(opt, dict(student.named_parameters()), res.train_grads,
                                values={n: p.detach() for n, p in student.named_parameters()})
    opt.zero_grad()
    for n, p in student.named_parameters():
        p.grad = res.train_grads[n]
    opt.step()
    for n, p in student.named_parameters():
        torch.testing.assert_close(p.detach(), vs.params[n], rtol=0, atol=0)


# -- FPMG under the optimiser actually used: torch SGD with momentum, Nesterov, weight decay -------------------
SGD_SETTINGS = {  # name: (momentum, dampening, weight_decay, nesterov, maximize)
    "plain": (0.0, 0.0, 0.0, False, False),
    "wd": (0.0, 0.0, 0.05, False, False),
    "momentum": (0.9, 0.0, 0.0, False, False),
    "momentum-wd": (0.9, 0.0, 0.05, False, False),
    "nesterov-wd": (0.9, 0.0, 0.05, True, False),
    "dampening-wd": (0.9, 0.3, 0.05, False, False),
    "maximize": (0.9, 0.0, 0.05, False, True),
}


def _unrolled_sgd(w0, buf0, grads_of, lrs, mom, damp, wd, nest, maxi):
    """k differentiable steps of torch.optim.SGD as documented (written out here, independently)."""
    w, buf = w0, buf0
    for t, lr in enumerate(lrs):
        grad = grads_of(t, w)
        g = (-grad if maxi else grad) + wd * w
        if mom:
            buf = g if buf is None else mom * buf + (1 - damp) * g
            g = g + mom * buf if nest else buf
        w = w - lr * g
    return w, buf


@pytest.mark.parametrize("warm", [True, False], ids=["buffer", "first-step"])
@pytest.mark.parametrize("setting", sorted(SGD_SETTINGS))
def test_fpmg_is_the_exact_unrolled_gradient_for_torch_sgd_when_the_inner_hessian_is_the_identity(setting, warm):
    """Issue 20: with H_ww = I the k-step meta-gradient (live step + FPMG over the k - 1 stored steps,
    the base's composition) equals autograd through k real torch-SGD steps, for momentum, Nesterov,
    dampening, weight decay, maximize, a changing lr, with and without a momentum buffer."""
    mom, damp, wd, nest, maxi = SGD_SETTINGS[setting]
    torch.manual_seed(3)
    student, teacher = _Vector(), Teacher(MLP(in_features=D, num_classes=K, hidden=(4,)), K, embedding_dim=3,
                                          hidden=4).double()
    Bm = torch.randn(K, K, dtype=torch.float64)
    k, lrs = 4, [0.2, 0.15, 0.12, 0.1]  # a schedule: each step its own lr
    opt = torch.optim.SGD(student.parameters(), lr=lrs[0], momentum=mom, dampening=damp, weight_decay=wd,
                          nesterov=nest, maximize=maxi)
    batches = [(torch.randn(N, D, dtype=torch.float64), torch.randint(0, K, (N,))) for _ in range(k)]
    mx, my = torch.randn(M, D, dtype=torch.float64), torch.randint(0, K, (M,))

    def inner(z, x, y, q=None):
        q = teacher(x, y)[0] if q is None else q
        return 0.5 * (z ** 2).sum(1) - (z * (q @ Bm.T)).sum(1)

    if warm and mom:  # a momentum buffer from an earlier step (a constant for this window)
        opt.zero_grad()
        inner(student(batches[0][0]), *batches[0]).mean().backward()
        opt.step()
    buf0 = opt.state[student.w].get("momentum_buffer") if opt.state else None
    buf0 = None if buf0 is None else buf0.detach().clone()
    w0 = student.w.detach().clone().requires_grad_()

    def grads_of(t, w):
        x, y = batches[t]
        return torch.autograd.grad(inner(w.expand(N, -1), x, y).mean(), w, create_graph=True)[0]

    wk, _ = _unrolled_sgd(w0, buf0, grads_of, lrs, mom, damp, wd, nest, maxi)
    exact = torch.autograd.grad(_ce(wk.expand(M, -1), my).mean(), list(teacher.parameters()))
    # the same trajectory by the real optimiser: k - 1 stored steps, then the live step by the engine
    steps = []
    for t in range(k - 1):
        x, y = batches[t]
        opt.param_groups[0]["lr"] = lrs[t]
        steps.append(StoredStep.capture(student, x=x, y=y, index=torch.arange(N), optimizer=opt))
        opt.zero_grad()
        with torch.no_grad():
            q = teacher(x, y)[0]
        inner(student(x), x, y, q).mean().backward()
        opt.step()
    opt.param_groups[0]["lr"] = lrs[-1]
    x, y = batches[-1]
    phi = list(teacher.parameters())
    live = meta_gradient_jvp(student, opt, x=x, y=y, loss_layer=lambda z, t: inner(z, x, t), meta_x=mx, meta_y=my,
                             meta_loss_fn=_ce, phi=phi, reuse_forward=False, jvp_backend="func")
    extra = lookahead_contributions(student, steps=steps, tangent=live.tangent, phi=phi, offset=1, optimizer=opt,
                                    loss_layer=lambda z, st: inner(z, st.x, st.y))
    opt.zero_grad()
    student.w.grad = live.train_grads["w"]
    opt.step()  # the live step taken: the trajectory is the unrolled one
    torch.testing.assert_close(student.w.detach(), wk.detach(), rtol=1e-12, atol=1e-12)
    for a, b, e in zip(live.meta_grads, extra, exact):
        torch.testing.assert_close(a + b, e, rtol=1e-9, atol=1e-12)


def _identity_hessian_problem(seed, k):
    """A vector student with a teacher-given linear inner loss 0.5|z|^2 - z.(B q): its Hessian in the
    student is the identity, so FPMG's H_ww = I is exact; k student batches and a meta batch."""
    torch.manual_seed(seed)
    student, teacher = _Vector(), Teacher(MLP(in_features=D, num_classes=K, hidden=(4,)), K, embedding_dim=3,
                                          hidden=4).double()
    Bm = torch.randn(K, K, dtype=torch.float64)
    batches = [(torch.randn(N, D, dtype=torch.float64), torch.randint(0, K, (N,))) for _ in range(k)]
    mx, my = torch.randn(M, D, dtype=torch.float64), torch.randint(0, K, (M,))

    def inner(z, x, y):
        return 0.5 * (z ** 2).sum(1) - (z * (teacher(x, y)[0] @ Bm.T)).sum(1)

    return student, teacher, batches, mx, my, inner


def test_fpmg_offset_zero_the_tangent_of_the_last_stored_step():
    """offset=0: the tangent is built with the last stored step's own scale (Nesterov + weight decay)."""
    mom, wd, lr, k = 0.9, 0.05, 0.2, 3
    student, teacher, batches, mx, my, inner = _identity_hessian_problem(4, k)
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=mom, weight_decay=wd, nesterov=True)
    w0 = student.w.detach().clone().requires_grad_()
    wk, _ = _unrolled_sgd(w0, None, lambda t, w: torch.autograd.grad(
        inner(w.expand(N, -1), *batches[t]).mean(), w, create_graph=True)[0], [lr] * k, mom, 0.0, wd, True, False)
    exact = torch.autograd.grad(_ce(wk.expand(M, -1), my).mean(), list(teacher.parameters()))
    steps = []
    for x, y in batches:
        steps.append(StoredStep.capture(student, x=x, y=y, index=torch.arange(N), optimizer=opt))
        opt.zero_grad()
        inner(student(x), x, y).mean().backward()  # the optimiser holds the student only
        opt.step()
    scale = lr * (1 + mom)  # d theta / d grad of a Nesterov step with a buffer (the last step's)
    _, tangent = meta_tangent(student, VirtualStep(params={"w": student.w.detach()}, scale={"w": scale}),
                              meta_x=mx, meta_y=my, meta_loss_fn=_ce)
    fpmg = lookahead_contributions(student, steps=steps, tangent=tangent, phi=list(teacher.parameters()), offset=0,
                                   loss_layer=lambda z, st: inner(z, st.x, st.y))
    for a, b in zip(fpmg, exact):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # EMLC's plain-SGD discount gamma = 1 - eta is far from it under momentum (why the discounts exist)
    plain = lookahead_contributions(student, steps=steps, tangent=tangent, phi=list(teacher.parameters()),
                                    gamma=1 - lr, loss_layer=lambda z, st: inner(z, st.x, st.y))
    err = float(_flat(plain).sub(_flat(exact)).norm() / _flat(exact).norm())
    assert err > 0.1


def test_fpmg_refuses_steps_captured_without_their_optimiser():
    student, teacher, opt, x, y, mx, my = _problem()
    st = [StoredStep.capture(student, x=x, y=y, index=torch.arange(N))]
    with pytest.raises(UserError, match="capture the steps with their optimizer"):
        lookahead_contributions(student, steps=st, tangent={"0.weight": torch.ones(5, D, dtype=torch.float64)},
                                phi=list(teacher.parameters()), loss_layer=lambda z, s: _ce(z, s.y))


def test_eq11_with_the_live_step_offset_one_is_exact_for_plain_sgd():
    """EMLC's Eq. 11 as the base composes it: live step (weight gamma^0) + stored steps tau = t-1, t-2, ...
    weighted gamma^1, gamma^2, ... (offset 1), against autograd through k plain SGD steps (H_ww = I)."""
    eta, k = 0.3, 4
    student, teacher, batches, mx, my, inner = _identity_hessian_problem(6, k)
    opt = torch.optim.SGD(student.parameters(), lr=eta)
    w0 = student.w.detach().clone().requires_grad_()
    wk, _ = _unrolled_sgd(w0, None, lambda t, w: torch.autograd.grad(
        inner(w.expand(N, -1), *batches[t]).mean(), w, create_graph=True)[0], [eta] * k, 0.0, 0.0, 0.0, False, False)
    exact = torch.autograd.grad(_ce(wk.expand(M, -1), my).mean(), list(teacher.parameters()))
    steps = []
    for x, y in batches[:-1]:
        steps.append(StoredStep.capture(student, x=x, y=y, index=torch.arange(N)))
        opt.zero_grad()
        inner(student(x), x, y).mean().backward()
        opt.step()
    x, y = batches[-1]
    phi = list(teacher.parameters())
    live = meta_gradient_jvp(student, opt, x=x, y=y, loss_layer=lambda z, t: inner(z, x, t), meta_x=mx, meta_y=my,
                             meta_loss_fn=_ce, phi=phi, reuse_forward=False, jvp_backend="func")
    extra = lookahead_contributions(student, steps=steps, tangent=live.tangent, phi=phi, offset=1, gamma=1 - eta,
                                    loss_layer=lambda z, st: inner(z, st.x, st.y))
    for a, b, e in zip(live.meta_grads, extra, exact):
        torch.testing.assert_close(a + b, e, rtol=1e-9, atol=1e-12)
