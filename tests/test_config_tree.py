"""One IGA config (issue 19, item 1): nested, round-tripped, and reaching every entry point."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace

import pytest

from iga.core import configio
from iga.core.config import IGAConfig
from iga.distill.pretrain import BaseConfig
from iga.distill.run import DistillConfig

# A value other than the default for every IGAConfig field (the seed follows the run's).
NON_DEFAULT = {
    "tau": 2.5,
    "variance": "raw",
    "projection": "tangent",
    "rank": 3,
    "space": "factor",
    "svd_method": "exact",
    "eps": 1e-9,
    "mask_floor": 0.2,
    "mask_target": "update",
    "estimator": "ema",
    "ema_beta": 0.8,
    "warmup_steps": 7,
    "seed": 11,
}


def test_non_default_covers_every_field():
    """If IGAConfig grows a field, this test (and the entry-point tests) must learn it."""
    assert set(NON_DEFAULT) == {f.name for f in fields(IGAConfig)}
    assert all(NON_DEFAULT[f.name] != f.default for f in fields(IGAConfig))


def test_distill_config_round_trips_nested_configs_tuples_and_none():
    config = DistillConfig(
        seed=11,
        train_domains=("law", "medicine", "science"),
        sets=("a.jsonl",),
        student=None,
        iga=IGAConfig(**NON_DEFAULT),
        base=replace(BaseConfig(), steps=17),
    )
    data = json.loads(json.dumps(config.to_dict()))  # as distill_config.json stores it
    assert data["iga"]["estimator"] == "ema" and data["iga"]["rank"] == 3
    back = DistillConfig.from_dict(data)
    assert back == config
    assert isinstance(back.iga, IGAConfig) and isinstance(back.base, BaseConfig)
    assert back.train_domains == ("law", "medicine", "science") and back.student is None
    assert IGAConfig.from_dict(IGAConfig(rank=None).to_dict()).rank is None


def test_from_dict_names_an_unknown_field_and_where_it_came_from():
    data = DistillConfig().to_dict()
    data["iga"]["temperature"] = 3
    with pytest.raises(
        ValueError, match=r"run/distill_config.json.iga: unknown key\(s\).*IGAConfig.*"
    ):
        DistillConfig.from_dict(data, where="run/distill_config.json")


def test_round_trip_would_catch_a_lost_tuple():
    """Companion: without from_dict's conversion, JSON's lists do not equal the tuples."""
    data = json.loads(json.dumps(DistillConfig().to_dict()))
    naive = DistillConfig(**{**data, "iga": IGAConfig(**data["iga"]), "base": BaseConfig()})
    assert naive != DistillConfig()
    assert configio.from_dict(DistillConfig, data) == DistillConfig()


def test_the_run_seed_seeds_the_iga_step():
    assert DistillConfig(seed=5).iga.seed == 5
    assert DistillConfig(seed=5, iga=IGAConfig(seed=9)).iga_config().seed == 5


def test_every_iga_field_reaches_iga_distill_flags():
    from iga.distill.cli import add_distill_flags, config_from_args

    p = argparse.ArgumentParser()
    add_distill_flags(p)
    flags = {
        "tau": "--tau", "variance": "--variance", "projection": "--projection",
        "rank": "--projection-rank", "space": "--space", "svd_method": "--svd-method",
        "eps": "--variance-eps", "mask_floor": "--mask-floor", "mask_target": "--mask-target",
        "estimator": "--estimator", "ema_beta": "--ema-beta", "warmup_steps": "--warmup-steps",
    }  # fmt: skip
    argv = ["--seed", "11"]
    for name, flag in flags.items():
        argv += [flag, str(NON_DEFAULT[name])]
    config = config_from_args(p.parse_args(argv))
    assert config.iga == IGAConfig(**NON_DEFAULT)
    # choice fields offer their choices
    actions = {a.dest: a for a in p._actions}
    assert tuple(actions["iga_estimator"].choices) == ("batch", "split", "ema")
    with pytest.raises(SystemExit):
        p.parse_args(["--estimator", "median"])


def test_every_iga_field_reaches_the_trainer_arguments(tmp_path):
    from iga.distill.run import training_arguments

    config = DistillConfig(seed=11, out=str(tmp_path), iga=IGAConfig(**NON_DEFAULT))
    args = training_arguments(config)
    assert args.iga_config() == IGAConfig(**NON_DEFAULT)
    for f in fields(IGAConfig):
        if f.name != "seed":
            assert hasattr(args, f"iga_{f.name}"), f.name


def test_every_iga_field_reaches_the_empirical_method_and_registry():
    from empirical.hparams import hparams
    from empirical.methods.iga_method import IGA_FIELDS

    defaults = hparams("iga")
    for f in fields(IGAConfig):
        if f.name in ("seed", "warmup_steps"):
            continue
        assert f.name in IGA_FIELDS
        assert defaults[f.name] == getattr(DistillConfig().iga, f.name), f.name
    assert "warmup_frac" in defaults


def test_empirical_method_builds_the_config_from_hparams():
    from empirical.hparams import hparams
    from empirical.methods.iga_method import IGA
    from tests.test_capture_models import lora_mlp

    hp = {
        **hparams("iga"),
        **{k: v for k, v in NON_DEFAULT.items() if k not in ("seed", "warmup_steps")},
    }
    hp["warmup_frac"] = 0.5
    method = IGA(lora_mlp(seed=0), 3, hp, steps=14, seed=11)
    assert method.config == IGAConfig(**NON_DEFAULT)
    method.close()


def test_a_run_folder_from_before_the_nesting_still_loads():
    old = json.loads(json.dumps(DistillConfig().to_dict()))
    del old["iga"]
    old.update(tau=0.5, variance="raw", projection="none", warmup_steps=3)
    config = DistillConfig.from_dict(old, where="old/distill_config.json")
    assert config.iga == IGAConfig(tau=0.5, variance="raw", projection="none", warmup_steps=3)
    both = {**old, "iga": IGAConfig().to_dict()}
    with pytest.raises(ValueError, match=r"old/distill_config.json: IGA fields .*'tau'"):
        DistillConfig.from_dict(both, where="old/distill_config.json")
