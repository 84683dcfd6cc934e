"""Configuration (``sarseg.config``): presets, overrides over them, the JSON round trip, and errors that
name the file and the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sarseg.config import (FINETUNE_PRESETS, PRESETS, FinetuneConfig, PretrainConfig, finetune_config, from_dict,
                           pretrain_config, read_config_file, to_dict)
from sarseg.core.errors import BadInput


def test_pretrain_presets() -> None:
    tiny, small, genesis = (pretrain_config(p) for p in ("tiny", "small", "genesis"))
    assert tiny.net.features == (8, 16, 32, 64, 128) and tiny.net.res_units == 1 and tiny.net.head_hidden == 16
    assert tiny.proxy.input_size == (32, 32, 16) and tiny.proxy.size_zyx == (16, 32, 32)
    assert (tiny.batch_size, tiny.steps, tiny.workers, tiny.pool_size) == (4, 60, 0, 4)
    assert small.net.features == (16, 32, 64, 128, 256) and small.proxy.input_size == (64, 64, 32)
    assert (small.batch_size, small.steps, small.lr) == (8, 2000, 1e-3)
    assert genesis.net.features == (32, 64, 128, 256, 512) and genesis.net.head_hidden == 256
    assert (genesis.batch_size, genesis.steps, genesis.checkpoint_every) == (16, 20000, 500)
    assert [c.preset for c in (tiny, small, genesis)] == ["tiny", "small", "genesis"]
    assert set(PRESETS) == set(FINETUNE_PRESETS)


def test_finetune_presets_share_the_networks_and_validate_less_often_when_longer() -> None:
    for preset in FINETUNE_PRESETS:
        assert finetune_config(preset).net == pretrain_config(preset).net  # a pretrained model fine-tunes as is
    tiny, small, genesis = (finetune_config(p) for p in ("tiny", "small", "genesis"))
    assert tiny.patch_size == (64, 64, 64) and small.patch_size == (64, 64, 32) and small.patch_zyx == (32, 64, 64)
    assert [(c.steps, c.val_every) for c in (tiny, small, genesis)] == [(100, 25), (1000, 200), (5000, 500)]
    assert (small.val_fraction, small.min_train_cases, small.lr) == (0.2, 3, 3e-4)


def test_overrides_merge_nested_settings_and_replace_labels_and_normalisation_whole() -> None:
    config = pretrain_config("tiny", {"proxy": {"scales": [0.2, 0.4, 0.8], "scale_unit": "fraction"},
                                      "normalisation": {"ct": {"kind": "ct", "low": -100.0, "high": 200.0}}, "seed": 7})
    assert config.proxy.scales == (0.2, 0.4, 0.8) and config.proxy.scale_unit == "fraction"
    assert config.proxy.input_size == (32, 32, 16)  # the preset's, kept beside the override
    assert config.normalisation == {"ct": {"kind": "ct", "low": -100.0, "high": 200.0}}  # no mr, pet, default left
    assert config.seed == 7 and config.net.features == (8, 16, 32, 64, 128)
    labels = {"mode": "regions", "names": ["a"], "values": [[1, 2]], "paint": [1], "colors": [[1, 0, 0]]}
    ft = finetune_config("small", {"labels": labels, "net": {"dropout": 0.1}})
    assert ft.labels.values == ((1, 2),) and ft.labels.mode == "regions"
    assert ft.net.dropout == 0.1 and ft.net.features == (16, 32, 64, 128, 256)


@pytest.mark.parametrize("make, cls", [(pretrain_config, PretrainConfig), (finetune_config, FinetuneConfig)])
def test_json_round_trip(make, cls) -> None:
    config = make("tiny", {"seed": 11})
    data = json.loads(json.dumps(to_dict(config)))
    assert isinstance(data["net"]["features"], list)
    assert from_dict(data, cls=cls) == config  # lists become tuples again


def test_unknown_preset_names_the_option() -> None:
    with pytest.raises(BadInput, match=r"^--preset: unknown preset 'huge'; choose one of tiny, small, genesis$"):
        pretrain_config("huge")


def test_unknown_settings_name_the_file_and_the_nested_place() -> None:
    with pytest.raises(BadInput, match=r"^my\.json: unknown setting\(s\) stepz; known: preset, net, "):
        pretrain_config("tiny", {"stepz": 3}, where="my.json")
    with pytest.raises(BadInput, match=r"^my\.json\.proxy: unknown setting\(s\) size; known: input_size, "):
        pretrain_config("tiny", {"proxy": {"size": [32, 32, 16]}}, where="my.json")


@pytest.mark.parametrize("make, overrides, setting", [
    (pretrain_config, {"net": {"features": [8, 16, 32, 64]}}, "net.features"),
    (pretrain_config, {"net": {"res_units": 0}}, "net.res_units"),
    (pretrain_config, {"steps": 0}, "steps"),
    (pretrain_config, {"batch_size": -1}, "batch_size"),
    (pretrain_config, {"optimizer": "adam"}, "optimizer"),
    (pretrain_config, {"log_every": 0}, "log_every"),
    (pretrain_config, {"proxy": {"input_size": [30, 32, 16]}}, "proxy.input_size"),
    (pretrain_config, {"proxy": {"scales": [64.0, 32.0]}}, "proxy.scales"),
    (pretrain_config, {"proxy": {"scale_unit": "voxel"}}, "proxy.scale_unit"),
    (pretrain_config, {"proxy": {"scales": [0.5, 2.0], "scale_unit": "fraction"}}, "proxy.scales"),
    (pretrain_config, {"proxy": {"flip_rate": 1.5}}, "proxy.flip_rate"),
    (pretrain_config, {"restore_loss": "huber"}, "restore_loss"),
    (pretrain_config, {"pool_size": 0}, "pool_size"),
    (finetune_config, {"patch_size": [64, 64, 20]}, "patch_size"),
    (finetune_config, {"val_fraction": 1.0}, "val_fraction"),
    (finetune_config, {"min_train_cases": 0}, "min_train_cases"),
    (finetune_config, {"val_every": 0}, "val_every"),
    (finetune_config, {"loss": "focal"}, "loss"),
    (finetune_config, {"affine_prob": 1.5}, "affine_prob"),
    (finetune_config, {"inference": {"overlap": 1.0}}, "inference.overlap"),
    (finetune_config, {"labels": {"mode": "classes", "names": ["a", "b"], "values": [[1]], "paint": [1],
                                  "colors": [[1, 0, 0]]}}, "label names, values, paint and colors"),
    (finetune_config, {"labels": {"mode": "classes", "names": ["a"], "values": [[0]], "paint": [0],
                                  "colors": [[1, 0, 0]]}}, "values must lie in 1.."),
])
def test_invalid_values_name_the_file_and_the_setting(make, overrides: dict, setting: str) -> None:
    with pytest.raises(BadInput) as caught:
        make("tiny", overrides, where="run.json")
    assert caught.value.what == "run.json"
    assert setting in caught.value.problem


def test_config_files(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"steps": 5}')
    assert read_config_file(path) == {"steps": 5}
    with pytest.raises(BadInput, match="no such config file"):
        read_config_file(tmp_path / "missing.json")
    path.write_text("{steps: 5}")
    with pytest.raises(BadInput, match=r"c\.json: is not valid JSON"):
        read_config_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(BadInput, match="must hold a JSON object"):
        read_config_file(path)


@pytest.mark.parametrize("overrides, problem", [
    ({"steps": "5"}, "steps must be int"), ({"lr": "x"}, "lr must be float"), ({"net": 5}, "net must be an object"),
    ({"proxy": {"scales": 3}}, "scales must be a list"), ({"workers": -1}, "workers must be 0"),
    ({"normalisation": {"mr": {"kind": "percentile", "low": 1, "high": 150}}}, "normalisation.mr: percentiles must lie in"),
    ({"normalisation": {"mr": {"kind": "zscore", "bogus": 1}}}, r"normalisation\.mr has unknown field\(s\) 'bogus'"),
    ({"normalisation": {"mr": {"kind": "zscore", "outside": "x"}}}, r"normalisation\.mr\.outside must be a finite number"),
    ({"normalisation": {"mr": {"kind": "percentile", "low": "a"}}}, r"normalisation\.mr\.low must be a finite number"),
    ({"normalisation": {"mr": {"kind": "minmax"}}}, "normalisation.mr: unknown kind 'minmax'"),
    ({"normalisation": {"mr": 5}}, r"normalisation\.mr must be a JSON object"),
])
def test_config_values_of_the_wrong_type_are_named(overrides: dict, problem: str) -> None:
    """Every config value is checked when the config is made, before a job starts (a normalisation entry
    with an unknown key once ended in a TypeError at the first read)."""
    for make in (pretrain_config, finetune_config) if "normalisation" in overrides else (pretrain_config,):
        with pytest.raises(BadInput, match=problem):
            make("tiny", overrides, where="run.json")
