import copy

import pytest

from noisylabels.config import DEFAULTS, config_hash, default_config, parse_assignment, resolve_config, set_value
from noisylabels.errors import UserError
from noisylabels.train import resolve_method_defaults


def test_defaults_are_the_main_job():
    cfg = resolve_config()
    assert cfg["data"]["name"] == "digits"
    assert cfg["noise"]["type"] == "symmetric" and cfg["noise"]["rate"] == 0.4
    assert cfg["loss"]["name"] == "auto" and cfg["model"]["name"] == "mlp"
    run = resolve_method_defaults(cfg)  # what the run trains on
    assert run["loss"]["name"] == "ce" and run["method"]["name"] == "erm" and run["data"]["meta_set"] == "clean"


def test_set_parses_yaml_values_and_free_sections():
    cfg = resolve_config(assignments=["loss.q=0.7", "optim.milestones=[40, 80]", "train.clip_grad_norm=null",
                                      "noise.options.include_true_class=true"])
    assert cfg["loss"]["q"] == 0.7
    assert cfg["optim"]["milestones"] == [40, 80]
    assert cfg["train"]["clip_grad_norm"] is None
    assert cfg["noise"]["options"]["include_true_class"] is True


def test_yaml_file_then_flags_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 3\nloss:\n  name: gce\n  q: 0.5\n")
    cfg = resolve_config(config_file=f, overrides={"train.epochs": 5}, assignments=["loss.q=0.9"])
    assert cfg["train"]["epochs"] == 5 and cfg["loss"] == {"name": "gce", "q": 0.9}
    assert cfg["train"]["batch_size"] == default_config()["train"]["batch_size"]


@pytest.mark.parametrize("text", ["train.epoch=3", "optimm.lr=1", "data.nme=x"])
def test_unknown_keys_rejected(text):
    with pytest.raises(UserError, match="unknown config key"):
        resolve_config(assignments=[text])


@pytest.mark.parametrize("text,match", [("noise.rate=1.0", r"\[0, 1\)"), ("noise.rate=-0.1", r"\[0, 1\)"),
                                        ("train.epochs=0", "epochs"), ("data.meta_set=gold", "meta_set"),
                                        ("optim.lr=0", "lr")])
def test_bad_values_rejected(text, match):
    with pytest.raises(UserError, match=match):
        resolve_config(assignments=[text])


def test_parse_assignment_requires_equals():
    with pytest.raises(UserError):
        parse_assignment("loss.q")
    assert parse_assignment("a=b") == ("a", "b")


def test_set_value_does_not_mutate():
    cfg = default_config()
    new = set_value(cfg, "train.epochs", 7)
    assert cfg["train"]["epochs"] == 30 and new["train"]["epochs"] == 7


def test_missing_and_corrupt_config_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        resolve_config(config_file=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_config(config_file=bad)


# Keys of DEFAULTS as of the first release with resumable checkpoints (issue 24's sync_batchnorm was
# added after it). A key added later must be listed in NEUTRAL_KEYS with the value at which runs are
# unchanged, or checkpoints written before it could no longer be resumed (their hash lacks it).
_RELEASED_KEYS = {
    "data.augment", "data.cache_dir", "data.dir", "data.memory_budget_gb", "data.meta_set", "data.meta_size",
    "data.name", "data.options", "data.stream", "data.stream_workers", "data.strong_augment", "data.test_subset",
    "data.train_subset", "data.val_fraction", "data.views", "device", "loss.name", "method.name", "model.name",
    "noise.options", "noise.rate", "noise.type", "optim.betas", "optim.gamma", "optim.lr", "optim.milestones",
    "optim.momentum", "optim.name", "optim.nesterov", "optim.schedule", "optim.warmup_epochs",
    "optim.weight_decay", "out", "seed", "train.amp", "train.batch_size", "train.channels_last",
    "train.checkpoint", "train.clip_grad_norm", "train.compile", "train.cudnn_benchmark", "train.epochs",
    "train.eval_batch_size", "train.num_threads", "train.progress",
}


def _dotted(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _dotted(v, prefix + (k,))
        else:
            yield ".".join(prefix + (k,))


def test_every_key_added_after_release_is_hash_neutral_at_its_default():
    from noisylabels.config import DEFAULTS, NEUTRAL_KEYS

    added = set(_dotted(DEFAULTS)) - _RELEASED_KEYS
    neutral = {".".join(p) for p in NEUTRAL_KEYS}
    assert added <= neutral, f"new config keys without a neutral value (config.NEUTRAL_KEYS): {sorted(added - neutral)}"
    for path, value in NEUTRAL_KEYS.items():
        d = DEFAULTS
        for k in path:
            d = d[k]
        assert d == value, f"{'.'.join(path)}: the default {d!r} is not the neutral value {value!r}"


def test_a_config_written_before_a_neutral_key_existed_hashes_alike_at_its_neutral_value():
    import copy
    import hashlib
    import json

    from noisylabels.config import NEUTRAL_KEYS, config_hash, default_config

    cfg = default_config()
    old = copy.deepcopy(cfg)
    for path in NEUTRAL_KEYS:  # a run config written before the keys existed
        section = old
        for k in path[:-1]:
            section = section[k]
        del section[path[-1]]
    for k in ("out",):
        old.pop(k)
    for k in ("progress", "num_threads"):
        old["train"].pop(k)
    old["data"].pop("cache_dir")
    expected = hashlib.sha256(json.dumps(json.loads(json.dumps(old, default=str)), sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()[:10]
    assert config_hash(cfg) == expected
    on = copy.deepcopy(cfg)
    on["train"]["sync_batchnorm"] = True
    assert config_hash(on) != expected  # a non-neutral value is part of the run's identity
    on = copy.deepcopy(cfg)
    on["optim"]["decay_beta1"] = 0.1
    assert config_hash(on) != expected


def test_eval_batch_size_auto_is_resolved_by_device_into_the_runs_config():
    """``auto`` (the default) becomes the number the run uses, so config.yaml and the config hash hold
    it: 64 on the CPU (measured 2-4x faster evaluation than 1000 there), 1000 on a GPU, where runs
    keep the number and hash they had before ``auto`` existed."""
    from noisylabels.config import EVAL_BATCH_AUTO, eval_batch_size

    assert DEFAULTS["train"]["eval_batch_size"] == "auto"
    assert resolve_config()["train"]["eval_batch_size"] == 64 == EVAL_BATCH_AUTO["cpu"]
    assert resolve_config(overrides={"device": "cuda"})["train"]["eval_batch_size"] == 1000
    assert resolve_config(overrides={"device": "cuda:1"})["train"]["eval_batch_size"] == 1000
    assert resolve_config(assignments=["train.eval_batch_size=500"])["train"]["eval_batch_size"] == 500
    before = resolve_config(overrides={"device": "cuda", "train.eval_batch_size": 1000})
    assert config_hash(resolve_config(overrides={"device": "cuda"})) == config_hash(before)
    raw = copy.deepcopy(DEFAULTS)  # a config that never went through resolve_config
    assert eval_batch_size(raw) == 64 and eval_batch_size({**raw, "device": "mps"}) == 1000


@pytest.mark.parametrize("value", ["fast", 0, -5, 2.5, True])
def test_bad_eval_batch_size_is_a_one_line_error(value):
    with pytest.raises(UserError, match=r"train.eval_batch_size must be an integer >= 1"):
        resolve_config(overrides={"train.eval_batch_size": value})


def test_weight_files_names_every_weight_file_a_config_loads():
    from noisylabels.config import WEIGHT_FILE_KEYS, weight_files

    cfg = resolve_config()
    assert weight_files(cfg) == {}
    cfg["model"]["init_checkpoint"], cfg["method"]["teacher_init"] = "a.pt", "b.pt"
    assert weight_files(cfg) == {"model.init_checkpoint": "a.pt", "method.teacher_init": "b.pt"}
    assert set(WEIGHT_FILE_KEYS) == set(weight_files(cfg))
