"""Property-based: random values for every config key (through ``--set``, the config checks and
the checks run before any data are loaded) and random bytes for every file a user hands us; every
failure must be a one-line :class:`~noisylabels.errors.UserError`, never another exception.

The default profile keeps each test to a few dozen examples (well under a second each); the
``fuzz`` profile (``pytest -m slow --hypothesis-profile=fuzz``) runs thousands.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisylabels.config import DEFAULTS, resolve_config
from noisylabels.config_doc import leaf_keys
from noisylabels.errors import UserError
from noisylabels.methods import METHODS

settings.register_profile("fuzz", max_examples=2000, deadline=None)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: YAML-ish values of every kind a user may type after ``key=``
values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(string.printable, max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(string.ascii_lowercase, min_size=1,
                                                                        max_size=6), inner, max_size=3),
    max_leaves=6,
)
raw_text = st.text(string.printable, max_size=20)
CONFIG_KEYS = [k for k in leaf_keys() if not k.startswith(("data.options", "noise.options"))]


def _assignment(key, value, raw):
    text = raw if raw is not None else yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _one_line(err: UserError) -> None:
    assert "\n" not in str(err) and str(err).strip(), repr(str(err))


def _check_config(assignments):
    from noisylabels.train.loop import check_names

    try:
        cfg = resolve_config(assignments=assignments)
        check_names(cfg)
    except UserError as err:
        _one_line(err)


def _config_property(key, value, raw):
    _check_config([_assignment(key, value, raw)])


def _method_property(method, option, value):
    _check_config([f"method.name={method}", _assignment(f"method.{option}", value, None)])


def _method_options():
    import inspect

    out = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        for target in [c.__init__ for c in cls.__mro__ if "__init__" in vars(c) and c is not object]:
            out += [(name, k) for k, p in inspect.signature(target).parameters.items() if p.kind is p.KEYWORD_ONLY]
    return sorted(set(out))


METHOD_OPTIONS = _method_options()


@FAST
@given(key=st.sampled_from(CONFIG_KEYS), value=values, raw=st.none() | raw_text)
def test_random_values_for_every_config_key_are_accepted_or_one_line_errors(key, value, raw):
    _config_property(key, value, raw)


@FAST
@given(option=st.sampled_from(METHOD_OPTIONS), value=values)
def test_random_values_for_every_method_option_are_accepted_or_one_line_errors(option, value):
    _method_property(*option, value)


def test_every_config_key_is_exercised():
    assert "seed" in CONFIG_KEYS and "optim.betas" in CONFIG_KEYS and "train.amp" in CONFIG_KEYS
    assert len(CONFIG_KEYS) >= len(DEFAULTS) + 30 and len(METHOD_OPTIONS) > 40


# ----------------------------------------------------------------------- files a user hands us

_PREFIXES = [b"", b"PK\x03\x04", b"\x93NUMPY\x01\x00v\x00", b"\x80\x02", b"\x80\x04\x95", b"path,label\n",
             b"index,split,observed_label,clean_label\n", b"\xef\xbb\xbf", b"0.5,0.5\n"]
file_bytes = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda p, b: p + b, st.sampled_from(_PREFIXES), st.binary(max_size=200)),
    st.builds(lambda p, t: p + t.encode(), st.sampled_from(_PREFIXES), st.text(string.printable, max_size=200)),
    st.builds(lambda b, n: b[:n], st.sampled_from(["torch", "npy", "npz"]).map(lambda k: _valid(k)),
              st.integers(0, 2000)),
)


def _valid(kind: str) -> bytes:
    """A valid file of ``kind``, for truncation at a random length."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f"
        if kind == "torch":
            torch.save({"w": torch.zeros(3), "b": [1, 2]}, p)
        elif kind == "npy":
            np.save(open(p, "wb"), np.arange(6))
        else:
            np.savez(open(p, "wb"), clean_label=np.arange(4))
        return p.read_bytes()


def _readers(tmp: Path):
    """``(suffix, reader)`` for every file a user hands us; each reader gets the file's path."""
    from noisylabels.bench.harness import load_suite
    from noisylabels.config import load_config
    from noisylabels.data.cifar_n import load_human_labels
    from noisylabels.data.labels_csv import read_csv_rows
    from noisylabels.detect.inputs import load_run_inputs, read_label_file, read_pred_probs
    from noisylabels.methods.narl_transfer import load_adjuster
    from noisylabels.models import read_state_dict
    from noisylabels.noise.class_conditional import load_matrix
    from noisylabels.train.records import RunRecorder

    def checkpoint(p):  # a run's checkpoint.pt read by --resume
        run = tmp / "resume"
        run.mkdir(exist_ok=True)
        (run / "checkpoint.pt").write_bytes(p.read_bytes())
        RunRecorder(run).load_checkpoint()

    def held_out(p):  # a run directory whose held_out.npy was replaced
        run = tmp / "run"
        if not run.is_dir():
            run.mkdir()
            rows = ["index,split,observed_label,clean_label"] + [f"{i},train,{i % 2},{i % 2}" for i in range(4)]
            (run / "labels.csv").write_text("\n".join(rows) + "\n")
            np.save(run / "pred_probs.npy", np.full((4, 2), 0.5, np.float32))
        (run / "held_out.npy").write_bytes(p.read_bytes())
        load_run_inputs(run)

    def run_labels(p):  # a run directory whose labels.csv was replaced
        run = tmp / "run2"
        run.mkdir(exist_ok=True)
        np.save(run / "pred_probs.npy", np.full((4, 2), 0.5, np.float32))
        (run / "labels.csv").write_bytes(p.read_bytes())
        load_run_inputs(run)

    return {
        "model.init_checkpoint": (".pt", lambda p: read_state_dict(p, what="model.init_checkpoint")),
        "method.teacher_init": (".pt", lambda p: read_state_dict(p, what="method.teacher_init")),
        "checkpoint.pt": (".pt", checkpoint),
        "method.adjuster": (".pt", load_adjuster),
        "labels_csv / trusted_csv": (".csv", read_csv_rows),
        "detect --labels (csv)": (".csv", lambda p: read_label_file(p, num_classes=3)),
        "detect --labels (npy)": (".npy", lambda p: read_label_file(p, num_classes=3)),
        "pred_probs (npy)": (".npy", read_pred_probs),
        "pred_probs (csv)": (".csv", read_pred_probs),
        "CIFAR-N (pt)": (".pt", load_human_labels),
        "CIFAR-N (npz)": (".npz", load_human_labels),
        "held_out.npy": (".npy", held_out),
        "run labels.csv": (".csv", run_labels),
        "--config YAML": (".yaml", load_config),
        "bench suite YAML": (".yaml", load_suite),
        "noise matrix (npy)": (".npy", load_matrix),
        "noise matrix (csv)": (".csv", load_matrix),
    }


FILE_KINDS = list(_readers(Path(".")))


def _read_as(kind, data):
    """Write ``data`` as a user file of ``kind`` and read it the way the library does."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        suffix, reader = _readers(tmp)[kind]
        path = tmp / f"user{suffix}"
        path.write_bytes(data)
        reader(path)


def _file_property(kind, data):
    try:
        _read_as(kind, data)
    except UserError as err:
        _one_line(err)


@FAST
@given(kind=st.sampled_from(FILE_KINDS), data=file_bytes)
def test_random_bytes_in_every_user_file_are_read_or_one_line_errors(kind, data):
    _file_property(kind, data)


@pytest.mark.parametrize("kind", FILE_KINDS)
def test_each_file_kind_refuses_an_empty_and_a_binary_junk_file(kind):
    if kind != "--config YAML":  # an empty config file is a valid one (every default)
        with pytest.raises(UserError):
            _read_as(kind, b"")
    with pytest.raises(UserError):
        _read_as(kind, b"\x00\x01garbage\xff")


@pytest.mark.slow
@SLOW
@given(key=st.sampled_from(CONFIG_KEYS), value=values, raw=st.none() | raw_text)
def test_many_random_config_values(key, value, raw):
    _config_property(key, value, raw)


@pytest.mark.slow
@SLOW
@given(option=st.sampled_from(METHOD_OPTIONS), value=values)
def test_many_random_method_options(option, value):
    _method_property(*option, value)


@pytest.mark.slow
@SLOW
@given(kind=st.sampled_from(FILE_KINDS), data=file_bytes)
def test_many_random_user_files(kind, data):
    _file_property(kind, data)
