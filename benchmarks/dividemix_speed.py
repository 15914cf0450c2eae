"""Cost of one DivideMix epoch: against one CE epoch of the library, and against the official code.

One run prints, on this machine and thread count:

1. **Library, DivideMix vs CE.** A CE run (``erm``) and a DivideMix run on the same data, model and
   batch size; for each, the wall time of the training steps of epoch 1 (DivideMix: warm-up 1, so
   epoch 1 divides and trains by MixMatch), DivideMix's split into the division pass (two
   evaluation passes over the training split and two GMM fits, ``on_epoch_start``) and training
   (both networks' MixMatch passes), and their ratios to the CE epoch. The warm-up epoch (two
   networks on CE, batches of twice the batch) is printed too.
2. **Official code** (``--official``): ``train`` and ``eval_train`` of ``Train_cifar.py`` from
   github.com/LiJunnan1992/DivideMix, read at run time from a temporary folder (never copied into
   this repository) given by ``--official-dir`` (e.g. ``git --git-dir=<mirror> archive HEAD | tar -x
   -C $tmp``). Its data pipeline needs torchvision, which does not import here, so its loaders are
   replaced by ready float tensors of the same shapes (random images: no decoding, no augmentation),
   with the labelled/unlabelled set sizes of the library's division of the same epoch, the same model
   architecture for both networks (the library's ``--model``), ``.cuda()`` as the identity, and its
   ``eval_train``'s fixed ``torch.zeros(50000)`` sized to the split. The library side keeps its data
   pipeline (crop + flip of uint8 images per batch) in its time; the official side's is zero. For a
   like-for-like comparison give ``--augment none``: the library's views are then the plain images
   (the per-batch gather and uint8-to-float conversion stay in its time), the same work as the
   official side's ready tensors.

    python benchmarks/dividemix_speed.py [--dataset digits] [--model mlp] [--subset 1000]
        [--batch-size 64] [--threads 1] [--augment none] [--official --official-dir /tmp/dmx_off]

Per-epoch times are single measurements (no repeats: the CPU here is shared), so ratios carry
the noise of a shared machine; run on an idle one for tight numbers. scikit-learn's GMM is imported
before any timing (the first division would otherwise pay for the import).
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from noisylabels.config import resolve_config
from noisylabels.train.loop import Run


def _cfg(args: argparse.Namespace, out: Path, **over: Any) -> dict[str, Any]:
    base = {"data.name": args.dataset, "model.name": args.model, "data.train_subset": args.subset,
            "noise.type": "symmetric", "noise.rate": 0.4, "train.batch_size": args.batch_size,
            "train.num_threads": args.threads, "train.epochs": 2, "train.progress": False, "out": str(out),
            "data.augment": args.augment}
    if args.data_dir:
        base["data.dir"] = args.data_dir
    return resolve_config(overrides={**base, **over})


def library_epochs(args: argparse.Namespace, method: str, out: Path, **over: Any) -> tuple[list[float], Run]:
    """Wall seconds of the training steps of epochs 0 and 1 (``Run.steps``, which includes the
    method's ``on_epoch_start``) of a 2-epoch run."""
    run = Run(_cfg(args, out, **{"method.name": method, **over}))
    run.begin()
    times = []
    for epoch in range(2):
        t = time.perf_counter()
        for _ in run.steps(epoch):
            pass
        times.append(time.perf_counter() - t)
        run.end_epoch(epoch)
    return times, run


def _official_functions(src: Path) -> dict[str, Any]:
    """``train``, ``eval_train``, ``SemiLoss`` and ``linear_rampup`` of ``Train_cifar.py``, compiled
    from its source (the script runs its experiment at import, so it is not imported)."""
    tree = ast.parse(src.read_text())
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and n.name in ("train", "eval_train", "linear_rampup", "SemiLoss")]
    code = compile(ast.Module(body=keep, type_ignores=[]), str(src), "exec")
    return {"code": code}


class _Iter:
    """An iterator with the Python 2 ``.next()`` the official code calls."""

    def __init__(self, items: list[Any]) -> None:
        self._it = iter(items)

    def __iter__(self) -> _Iter:
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def next(self) -> Any:  # noqa: A003
        return next(self._it)


class _Loader:
    """Ready batches with the ``dataset`` length the official code reads."""

    def __init__(self, items: list[Any], n: int) -> None:
        self.items, self.dataset = items, range(n)

    def __iter__(self) -> _Iter:
        return _Iter(self.items)


def official_epoch(args: argparse.Namespace, fns: dict[str, Any], nets: list[torch.nn.Module], shape: tuple[int, ...],
                   sizes: dict[str, int], n_train: int) -> tuple[float, float]:
    """Seconds of the official ``eval_train`` (both networks) and ``train`` (both networks) on
    tensors of the library's division sizes; ``nets``: copies of the library run's two networks."""
    g = torch.Generator().manual_seed(0)
    bs, k = args.batch_size, 10

    def batches(n: int, labelled: bool) -> list[Any]:
        out = []
        for s in range(0, n, bs):
            m = min(bs, n - s)
            x1, x2 = torch.randn(m, *shape, generator=g), torch.randn(m, *shape, generator=g)
            if labelled:
                out.append((x1, x2, torch.randint(0, k, (m,), generator=g), torch.rand(m, generator=g).double()))
            else:
                out.append((x1, x2))
        return out

    eval_items = [(torch.randn(min(bs, n_train - s), *shape, generator=g),
                   torch.randint(0, k, (min(bs, n_train - s),), generator=g), torch.arange(s, min(s + bs, n_train)))
                  for s in range(0, n_train, bs)]
    ns: dict[str, Any] = {"torch": torch, "np": np, "nn": torch.nn, "F": torch.nn.functional,
                          "sys": SimpleNamespace(stdout=io.StringIO()),
                          "args": SimpleNamespace(batch_size=bs, num_class=k, T=0.5, alpha=4.0, lambda_u=25.0, r=0.4,
                                                  dataset=args.dataset, noise_mode="sym", num_epochs=2),
                          "warm_up": 1, "CE": torch.nn.CrossEntropyLoss(reduction="none"),
                          "eval_loader": eval_items}
    from sklearn.mixture import GaussianMixture

    ns["GaussianMixture"] = GaussianMixture  # what the official script imports at its top
    # the official eval_train scores a fixed 50,000 samples: size it to the split (stated above)
    src_code = fns["code"]
    exec(src_code, ns)  # noqa: S102  (the official functions, compiled from its source above)
    eval_train = ns["eval_train"]
    ns["criterion"] = ns["SemiLoss"]()
    opts = [torch.optim.SGD(n.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4) for n in nets]
    real_zeros = torch.zeros
    t = time.perf_counter()
    torch.zeros = lambda *a, **kw: real_zeros(n_train, **kw) if a == (50000,) else real_zeros(*a, **kw)  # noqa: E731
    try:
        for net in nets:
            eval_train(net, [])
    finally:
        torch.zeros = real_zeros
    div_s = time.perf_counter() - t
    t = time.perf_counter()
    for i, (net, other) in enumerate(((nets[0], nets[1]), (nets[1], nets[0]))):
        lab = _Loader(batches(sizes[f"x{i}"], True), sizes[f"x{i}"])
        unl = _Loader(batches(sizes[f"u{i}"], False), sizes[f"u{i}"])
        ns["train"](1, net, other, opts[i], lab, unl)
    return div_s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--subset", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--augment", default="auto", choices=["auto", "none"],
                    help="the library's weak views: auto (crop + flip) or none (like for like with --official)")
    ap.add_argument("--official", action="store_true", help="also time the official code's train and eval_train")
    ap.add_argument("--official-dir", default=None, help="a folder holding the official Train_cifar.py")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import sklearn.mixture  # noqa: F401  (imported once per process: not part of any epoch's time)

    with tempfile.TemporaryDirectory() as tmp:
        (ce0, ce1), _ = library_epochs(args, "erm", Path(tmp) / "ce")
        (wu, dm1), run = library_epochs(args, "dividemix", Path(tmp) / "dmx", **{"method.warmup_epochs": 1})
        m, ctx = run.ctx.method, run.ctx
        div = m.division_seconds
        sets = m.labelled_sets(ctx)
        n_train = len(ctx.data.splits["train"])
        shape = tuple(ctx.images.shape[1:])
        nets = [copy.deepcopy(ctx.model), copy.deepcopy(ctx.networks["peer"].model)]
    print(f"# {args.dataset}, {args.model}, {n_train} training samples, batch {args.batch_size}, "
          f"{args.threads} thread(s), 40% symmetric noise, library augmentation {args.augment}")
    print(f"division of epoch 1: |X_A| {len(sets['model'][0])}, |X_B| {len(sets['peer'][0])} of {n_train}")
    print("| epoch | seconds | ratio to a CE epoch |")
    print("|---|---:|---:|")
    print(f"| CE (epoch 1) | {ce1:.2f} | 1.00 |")
    print(f"| DivideMix warm-up (epoch 0: two networks on CE) | {wu:.2f} | {wu / ce1:.2f} |")
    print(f"| DivideMix epoch 1, total | {dm1:.2f} | {dm1 / ce1:.2f} |")
    print(f"|   division pass (2 evaluation passes + 2 GMM fits) | {div:.2f} | {div / ce1:.2f} |")
    print(f"|   training (MixMatch, both networks) | {dm1 - div:.2f} | {(dm1 - div) / ce1:.2f} |")
    if not args.official:
        return
    if not args.official_dir or not (Path(args.official_dir) / "Train_cifar.py").is_file():
        sys.exit("--official needs --official-dir holding the official Train_cifar.py")
    fns = _official_functions(Path(args.official_dir) / "Train_cifar.py")
    sizes = {"x0": len(sets["model"][0]), "u0": len(sets["model"][1]), "x1": len(sets["peer"][0]),
             "u1": len(sets["peer"][1])}
    tensor_cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **kw: self  # the official code moves every tensor to the GPU
    try:
        odiv, otrain = official_epoch(args, fns, nets, shape, sizes, n_train)
    finally:
        torch.Tensor.cuda = tensor_cuda
    print("\n| DivideMix epoch 1 | library s | official s | library / official |")
    print("|---|---:|---:|---:|")
    print(f"| division pass | {div:.2f} | {odiv:.2f} | {div / odiv:.2f} |")
    print(f"| training (both networks) | {dm1 - div:.2f} | {otrain:.2f} | {(dm1 - div) / otrain:.2f} |")
    print(f"| total | {dm1:.2f} | {odiv + otrain:.2f} | {dm1 / (odiv + otrain):.2f} |")


if __name__ == "__main__":
    main()
