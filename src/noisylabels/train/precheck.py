"""What a run reads besides its data, checked before any data are loaded.

Decoding a dataset takes seconds to minutes; a misspelt method or noise option, or a missing
``model.init_checkpoint`` / ``method.teacher_init`` / adjuster / transition-matrix file, must be
reported before that, not after (the EMLC example reported a missing ``simclr.pt`` after 14 s of
decoding CIFAR-10). :func:`check_inputs` builds the method (its options are checked by its
constructor; t-narl reads its adjuster file), checks the model and noise option names against
their factories' signatures, and reads every weight file the run will load (a missing, text or
crafted file is a one-line error; weights load with ``weights_only=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["check_inputs", "check_option_names"]

#: model options every model takes (see :func:`noisylabels.models.create_model`)
_MODEL_COMMON = ("init_checkpoint", "init_exclude")


def check_option_names(kind: str, name: str, fn: Any, given: Mapping[str, Any], *, common: tuple[str, ...] = (),
                       fixed: tuple[str, ...] = ()) -> None:
    """Option names of a factory, checked against its signature without calling it (one line
    naming the valid ones; ``common``: options the caller handles itself, ``fixed``: arguments
    the caller supplies, not listed)."""
    from ..registry import keyword_options

    options = keyword_options(fn)
    if options is None:  # the factory takes any option
        return
    accepted, keyword = options
    bad = [k for k in given if k not in accepted and k not in common]
    if bad:
        shown = [k for k in keyword if k not in fixed] + list(common)
        raise UserError(f"{kind} {name!r} has no option(s) {', '.join(map(repr, bad))}; "
                        f"valid options: {', '.join(shown) or '(none)'}")


def check_inputs(run: Mapping[str, Any]) -> None:
    """Method, model and noise options and every weight file of a resolved run config
    (:func:`noisylabels.train.resolve_method_defaults`), before any data are loaded."""
    from ..methods import create_method
    from ..models import MODELS, read_state_dict
    from ..models.timm_adapter import TIMM_PREFIX
    from ..noise import NOISE

    mcfg = {k: v for k, v in run["method"].items() if k != "name"}
    method = create_method(str(run["method"]["name"]), **mcfg)  # option names and values; t-narl's adjuster
    method.check_config(run)  # options against the rest of the config (e.g. a forget rate from simulated noise)
    model = {k: v for k, v in run["model"].items() if k != "name"}
    name = str(run["model"]["name"])
    if not name.lower().startswith(TIMM_PREFIX):
        check_option_names("model", name.lower(), MODELS.get(name), model, common=_MODEL_COMMON,
                            fixed=("num_classes", "in_channels", "image_size"))
    noise = str(run["noise"]["type"])
    options = dict(run["noise"].get("options") or {})
    check_option_names("noise type", noise, NOISE.get(noise), options)
    if options.get("matrix_path") is not None and not Path(str(options["matrix_path"])).expanduser().is_file():
        raise UserError(f"noise.options.matrix_path: file not found: {options['matrix_path']}")
    if model.get("init_checkpoint") is not None:
        read_state_dict(str(model["init_checkpoint"]), what="model.init_checkpoint")
    teacher = getattr(method, "teacher_init", None)
    if teacher is not None:
        read_state_dict(str(teacher), what="method.teacher_init")
