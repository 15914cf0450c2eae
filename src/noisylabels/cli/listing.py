"""``noisylabels config | noise | datasets | methods | models | losses``: what a run can be configured with."""

from __future__ import annotations

import argparse


def _add_noise(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("noise", help="simulate label noise on a dataset; print the transition matrix")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--noise", default="symmetric")
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="noise option, e.g. --set include_true_class=true")
    p.add_argument("--csv", help="write the noisy labels to this CSV: for image-folder data the columns "
                                 "path,label,clean_label,index (data.options.labels_csv reads path,label); for data "
                                 "without image files (digits, MNIST, CIFAR pickles) the columns index,clean,noisy")
    p.add_argument("--list", action="store_true", help="list the noise types and exit")



def cmd_config(args: argparse.Namespace) -> int:
    from ..config import default_config
    from ..config_doc import method_config, render_config

    if args.method:
        cfg, notes = method_config(args.method)
        head = f"# noisylabels train --config FILE: the resolved config of method {args.method}\n"
    else:
        cfg, notes = default_config(), {}
        head = "# noisylabels train --config FILE: every field at its default (a file may give any subset)\n"
    print(head + render_config(cfg, notes=notes), end="")
    return 0



def cmd_noise(args: argparse.Namespace) -> int:
    import numpy as np

    from ..config import parse_assignment
    from ..data import create_dataset
    from ..noise import apply_noise, format_matrix, list_noise_types, write_noisy_labels_csv

    if args.list:
        for name in list_noise_types():
            print(name)
        return 0
    options = dict(parse_assignment(s) for s in args.set)
    from ..noise import NOISE
    from ..train.precheck import check_option_names

    check_option_names("noise type", args.noise, NOISE.get(args.noise), options)  # before the data load
    raw = create_dataset(args.dataset, data_dir=args.data_dir)
    y = raw.y_train.astype(np.int64)
    features = raw.x_train.reshape(len(y), -1).astype(np.float32) / 255.0 if args.noise == "instance" else None
    res = apply_noise(args.noise, y, num_classes=len(raw.classes), rate=args.rate, seed=args.seed,
                      features=features, **options)
    print(f"{args.noise} noise, rate {args.rate}, seed {args.seed} on {args.dataset} ({len(y)} training labels)")
    print("transition matrix T[i, j] = P(noisy = j | clean = i):")
    print(format_matrix(res.transition, raw.classes))
    print(f"realised noise rate: {res.realized_rate:.4f}")
    if args.csv:
        if raw.paths_train is not None:  # file-backed data: the path,label file data.options.labels_csv reads
            from ..noise.io import write_labels_csv

            write_labels_csv(args.csv, paths=raw.paths_train, labels=res.noisy_labels, classes=raw.classes, clean=y)
            print(f"wrote {args.csv} (path,label,clean_label,index: use it with --set data.options.labels_csv={args.csv} --noise none)")
        else:
            write_noisy_labels_csv(args.csv, index=np.arange(len(y)), clean=y, noisy=res.noisy_labels)
            print(f"wrote {args.csv} (index,clean,noisy: {args.dataset} has no image files, so no path,label file)")
    return 0



def cmd_list(command: str) -> int:
    if command == "datasets":
        from ..data import DATASETS as reg
    elif command == "methods":
        from ..methods import METHODS as reg
    elif command == "models":
        from ..models import MODELS as reg
    else:
        from ..losses import LOSSES as reg
    for name in reg.names():
        desc = reg.describe(name)
        print(f"{name:<22} {desc}" if desc else name)
    return 0


