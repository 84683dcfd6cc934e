"""``sarseg.core.card``: model.json as a typed, checked ``ModelCard``: round trip in the current format,
legacy (``sar-model`` version 1) cards, every field's type and range, bounded architecture sizes, the
weights file name and its SHA-256."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from sarseg.core import card as card_module
from sarseg.core.card import (FORMAT, FORMAT_VERSION, Architecture, InferenceConfig, ModelCard, PromptSpec, Weights,
                              read_card, sha256)
from sarseg.core.errors import BadInput
from sarseg.core.labels import SCHEMES

WEIGHT_BYTES = b"weights of a test model"
DIGEST = hashlib.sha256(WEIGHT_BYTES).hexdigest()


def segmentation_card() -> ModelCard:
    return ModelCard(kind="segmentation", architecture=Architecture("resunet3d", 2, 3, (8, 16, 32, 64, 128), 1, "instance"),
                     preset="tiny", normalisation={"mr": {"kind": "percentile", "low": 0.5, "high": 99.5}},
                     provenance={"steps": 7}, weights=Weights("weights.safetensors", DIGEST), modalities=("flair", "t1c"),
                     patch_size=(32, 32, 16), labels=SCHEMES["brats"], inference=InferenceConfig(overlap=0.25))


def pretrained_card() -> ModelCard:
    return ModelCard(kind="pretrained", architecture=Architecture("sar-resunet3d", 1, 1, (8, 16, 32, 64, 128), 1, "instance",
                                                                   16, 3, 2),
                     preset="tiny", normalisation={"ct": {"kind": "ct", "low": -1000.0, "high": 1000.0}},
                     weights=Weights("weights.safetensors", DIGEST), sources=("ct", "mr"), input_size=(32, 32, 16),
                     scales={"sizes": [32.0, 64.0, 128.0], "unit": "mm"})


def promptable_card() -> ModelCard:
    """One image channel and the three guidance channels: a lesion-click model."""
    return ModelCard(kind="segmentation", architecture=Architecture("resunet3d", 4, 1, (8, 16, 32, 64, 128), 1, "instance"),
                     preset="tiny", normalisation={"default": {"kind": "percentile", "low": 0.5, "high": 99.5}},
                     weights=Weights("weights.safetensors", DIGEST), modalities=("default",), patch_size=(32, 32, 16),
                     labels=SCHEMES["binary"], inference=InferenceConfig(), prompts=PromptSpec())


def folder_with(tmp_path: Path, data: dict, weights: bytes = WEIGHT_BYTES) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "model.json").write_text(json.dumps(data))
    (folder / "weights.safetensors").write_bytes(weights)
    return folder


# A card as sarseg wrote it before the rename (format sar-model 1): a fine-tuned and a pretrained one.
LEGACY_SEGMENTATION = {
    "format": "sar-model", "format_version": 1, "kind": "segmentation", "preset": "tiny",
    "architecture": {"name": "resunet3d", "features": [8, 16, 32, 64, 128], "res_units": 1, "norm": "instance",
                     "in_channels": 1, "out_channels": 3},
    "in_channels": 1, "modalities": ["mr"], "patch_size": [32, 32, 16],
    "normalisation": {"mr": {"kind": "percentile", "low": 0.5, "high": 99.5}},
    "labels": [{"name": "label 1", "value": 1, "color": [0.9, 0.3, 0.2], "values": [1]},
               {"name": "label 2", "value": 2, "color": [0.3, 0.75, 0.35], "values": [2]}],
    "label_mode": "classes",
    "inference": {"overlap": 0.5, "sw_batch_size": 4, "tta": False, "largest_component": False, "min_size_mm3": 0.0,
                  "fill_holes": False},
    "provenance": {"init": {"path": "scratch", "kind": "scratch", "weights_sha256": None}, "steps": 4},
    "weights": {"file": "weights.safetensors", "sha256": DIGEST},
}
LEGACY_PRETRAINED = {
    "format": "sar-model", "format_version": 1, "kind": "pretrained", "preset": "tiny",
    "architecture": {"name": "sar-resunet3d", "features": [8, 16, 32, 64, 128], "res_units": 1, "norm": "instance",
                     "head_hidden": 16, "in_channels": 1, "scales": 3, "sources": 2},
    "in_channels": 1, "input_size": [32, 32, 16], "scales": {"sizes": [32.0, 64.0, 128.0], "unit": "mm"},
    "sources": ["mr", "ct"], "normalisation": {}, "provenance": {"steps": 20},
    "weights": {"file": "weights.safetensors", "sha256": DIGEST},
}


# ------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("make", [segmentation_card, pretrained_card, promptable_card])
def test_write_and_read_back(make, tmp_path: Path) -> None:
    card = make()
    path = card.write(tmp_path)
    assert path == tmp_path / "model.json" and card.path == path
    data = json.loads(path.read_text())
    assert (data["format"], data["format_version"]) == (FORMAT, FORMAT_VERSION) == ("sarseg-model", 2)
    assert data["in_channels"] == card.architecture.in_channels
    again = read_card(tmp_path)
    assert again == card and again.path == path
    assert ModelCard.from_dict(card.to_dict(), "x") == card


def test_segmentation_labels_in_model_json(tmp_path: Path) -> None:
    segmentation_card().write(tmp_path)
    data = json.loads((tmp_path / "model.json").read_text())
    assert data["label_mode"] == "regions"
    assert data["labels"][0] == {"name": "whole tumor", "value": 2, "color": [0.35, 0.75, 0.35], "values": [1, 2, 3, 4]}
    assert data["architecture"]["out_channels"] == 3 and data["inference"]["overlap"] == 0.25


def test_a_card_that_would_not_read_back_is_not_written(tmp_path: Path) -> None:
    card = segmentation_card()
    card.modalities = ("flair",)  # two input channels
    with pytest.raises(BadInput, match="the number of modalities is 1, but the architecture needs 2"):
        card.write(tmp_path)
    assert not (tmp_path / "model.json").exists()


# ------------------------------------------------------------------------------- legacy cards


def test_legacy_cards_load(tmp_path: Path) -> None:
    card = read_card(folder_with(tmp_path, LEGACY_SEGMENTATION))
    assert card.kind == "segmentation" and card.architecture.out_channels == 3 and card.modalities == ("mr",)
    assert card.labels.names == ("label 1", "label 2") and card.inference == InferenceConfig()
    assert card.verify() == tmp_path / "model" / "weights.safetensors"
    card.need("architecture", "patch_size", "normalisation")
    pretrained = read_card(folder_with(tmp_path, LEGACY_PRETRAINED))
    assert pretrained.architecture.out_channels == 1  # not written then: a SAR model restores its input
    assert (pretrained.architecture.scales, pretrained.sources) == (3, ("mr", "ct"))
    assert pretrained.to_dict()["format"] == FORMAT  # saved again, it is a current card


def test_a_legacy_card_without_sizes_is_listed_but_not_built(tmp_path: Path) -> None:
    """As hand-written cards (and the Slicer modules' tests) describe a model: name and channels only."""
    data = {"format": "sar-model", "format_version": 1, "kind": "segmentation",
            "architecture": {"name": "resunet3d", "in_channels": 1}, "modalities": ["mr"],
            "labels": [{"name": "tumor", "value": 1}], "weights": {"file": "weights.safetensors", "sha256": DIGEST}}
    card = read_card(folder_with(tmp_path, data))
    assert card.architecture.out_channels == 2 and card.preset is None and card.provenance == {}
    with pytest.raises(BadInput, match=r"model.json: has no patch_size, architecture.features, architecture.res_units, "
                                       r"architecture.norm: this sarseg cannot segment"):
        card.need("architecture", "patch_size", purpose="segment")


def test_current_cards_must_be_complete(tmp_path: Path) -> None:
    data = segmentation_card().to_dict()
    del data["architecture"]["features"]
    with pytest.raises(BadInput, match="architecture has no 'features'"):
        ModelCard.from_dict(data, "model.json")
    data = segmentation_card().to_dict()
    del data["patch_size"]
    with pytest.raises(BadInput, match="model.json: the card has no 'patch_size'"):
        ModelCard.from_dict(data, "model.json")
    data = segmentation_card().to_dict()
    data["architecture"]["name"] = "sar-resunet3d"
    with pytest.raises(BadInput, match="a segmentation model's architecture is 'resunet3d', not 'sar-resunet3d'"):
        ModelCard.from_dict(data, "model.json")


@pytest.mark.parametrize("stamp, problem", [
    (("sarseg-model", 3), "format version 3 is newer than this sarseg reads (2); update sarseg"),
    (("sar-model", 2), "not a SAR model description"),
    (("onnx", 1), "not a SAR model description"),
    ((None, None), "not a SAR model description"),
])
def test_format_stamp(stamp, problem) -> None:
    data = {**segmentation_card().to_dict(), "format": stamp[0], "format_version": stamp[1]}
    with pytest.raises(BadInput, match=problem.replace("(", r"\(").replace(")", r"\)")):
        ModelCard.from_dict(data, "model.json")


# ------------------------------------------------------------------------------- hostile cards


def changed(path: str, value) -> dict:
    """The segmentation card as a dict with one field (``a.b.c``) set to ``value`` (or removed when ...)."""
    data = copy.deepcopy(segmentation_card().to_dict())
    *parents, key = path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is ...:
        del target[key]
    elif isinstance(target, list):
        target[int(key)] = value
    else:
        target[key] = value
    return data


@pytest.mark.parametrize("path, value, problem", [
    ("architecture.features.4", 400000, "architecture.features[4] must be an integer from 1 to 1024 (got 400000)"),
    ("architecture.features", [8, 16, 32, 64], "architecture.features needs 5 to 5 entries"),
    ("architecture.res_units", 100, "architecture.res_units must be an integer from 1 to 8"),
    ("architecture.in_channels", 0, "architecture.in_channels must be an integer from 1 to 32"),
    ("architecture.in_channels", True, "architecture.in_channels must be an integer"),
    ("architecture.out_channels", 4, "architecture.out_channels for 3 regions is 4, but the architecture needs 3"),
    ("architecture.norm", "layer", "architecture.norm is 'layer'; choose instance, batch"),
    ("architecture.name", "sar-unet3d", "architecture 'sar-unet3d' is not one this sarseg version builds"),
    ("architecture.depth", 9, "architecture has unknown field(s) 'depth'"),
    ("patch_size", [4096, 4096, 4096], "patch_size: sides must be multiples of 16 (4 poolings) from 16 to 512"),
    ("patch_size", [512, 512, 512], "holds more than 16777216 voxels"),
    ("patch_size", [32, 32, 20], "sides must be multiples of 16"),
    ("patch_size", [32.0, 32, 16], "needs 3 integer sides"),
    ("in_channels", 3, "in_channels is 3, but the architecture needs 2"),
    ("modalities", ["flair", 7], "modalities[1] must be a non-empty string"),
    ("kind", "classifier", "kind is 'classifier'; choose pretrained, segmentation"),
    ("preset", ["tiny"], "preset must be a non-empty string"),
    ("inference.overlap", "half", "inference.overlap must be a finite number in [0.0, 0.99]"),
    ("inference.sw_batch_size", 10 ** 9, "inference.sw_batch_size must be an integer from 1 to 256"),
    ("inference.tta", 1, "inference.tta must be true or false"),
    ("inference.turbo", True, "inference has unknown field(s) 'turbo'"),
    ("normalisation.mr", "percentile", "normalisation.mr must be a JSON object"),
    ("normalisation.mr.low", float("nan"), "normalisation.mr.low must be a finite number"),
    ("provenance", [1, 2], "provenance must be a JSON object"),
    ("labels.0.values", [9], "label 'whole tumor': its painted value 2 is not one of its values [9]"),
    ("label_mode", "sigmoid", "label_mode is 'sigmoid'; choose classes, regions"),
    ("labels", ..., "the card has no 'labels'"),
    ("weights.file", "../weights.safetensors", "weights.file '../weights.safetensors' must be a plain file name"),
    ("weights.file", "/etc/passwd", "must be a plain file name inside the model folder"),
    ("weights.file", "sub\\w.safetensors", "must be a plain file name inside the model folder"),
    ("weights.file", "..", "must be a plain file name inside the model folder"),
    ("weights.sha256", "ABC", "weights.sha256 must be 64 lowercase hex digits"),
    ("weights", ..., "the card has no 'weights'"),
    ("comment", "hello", "the card has unknown field(s) 'comment'"),
])
def test_every_field_is_checked(path: str, value, problem: str) -> None:
    with pytest.raises(BadInput) as caught:
        ModelCard.from_dict(changed(path, value), "/models/m/model.json")
    assert str(caught.value).startswith("/models/m/model.json: ") and problem in str(caught.value)


def test_promptable_cards_say_so() -> None:
    data = promptable_card().to_dict()
    assert data["prompts"] == {"channels": ["positive", "negative", "box"], "sigma": 2.0}
    assert ModelCard.from_dict(data, "m").promptable and not ModelCard.from_dict(segmentation_card().to_dict(), "m").promptable
    assert "prompts" not in segmentation_card().to_dict()  # a fixed model's card is as before
    clicks_only = {**data, "prompts": {"channels": ["positive", "negative"], "sigma": 3}, "in_channels": 3,
                   "architecture": {**data["architecture"], "in_channels": 3}}
    assert ModelCard.from_dict(clicks_only, "m").prompts == PromptSpec(("positive", "negative"), 3.0)


@pytest.mark.parametrize("change, problem", [
    ({"prompts": {"channels": ["positive", "negative", "box"]}}, "prompts has no 'sigma'"),
    ({"prompts": {"channels": ["positive", "scribble"], "sigma": 2}}, "prompts.channels[1] is 'scribble'"),
    ({"prompts": {"channels": ["box", "positive", "negative"], "sigma": 2}}, "distinct and in the order"),
    ({"prompts": {"channels": ["positive", "positive", "box"], "sigma": 2}}, "distinct and in the order"),
    ({"prompts": {"channels": ["negative"], "sigma": 2}}, "needs 'positive' or 'box'"),
    ({"prompts": {"channels": [], "sigma": 2}}, "prompts.channels needs 1 to 3 entries"),
    ({"prompts": {"channels": ["positive", "negative", "box"], "sigma": 0}}, "prompts.sigma must be a finite number"),
    ({"prompts": {"channels": ["positive", "negative", "box"], "sigma": 2, "radius": 1}}, "unknown field(s) 'radius'"),
    ({"prompts": ["positive"]}, "prompts must be a JSON object"),
    ({"prompts": None, "in_channels": 4}, "the number of modalities is 1, but the architecture needs 4"),
    ({"modalities": ["flair", "t1c"]}, "the number of modalities and prompt channels is 5, but the architecture needs 4"),
    ({"labels": [{"name": "a", "value": 1}, {"name": "b", "value": 2}], "label_mode": "classes",
      "architecture": {"name": "resunet3d", "in_channels": 4, "out_channels": 3, "features": [8, 16, 32, 64, 128],
                       "res_units": 1, "norm": "instance"}}, "a promptable model segments one label"),
])
def test_promptable_fields_are_checked(change: dict, problem: str) -> None:
    data = {**promptable_card().to_dict(), **change}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(BadInput) as caught:
        ModelCard.from_dict(data, "/models/m/model.json")
    assert str(caught.value).startswith("/models/m/model.json: ") and problem in str(caught.value), caught.value
    with pytest.raises(BadInput, match="the card has unknown field"):  # a pretrained model takes no prompts
        ModelCard.from_dict({**pretrained_card().to_dict(), "prompts": PromptSpec().to_dict()}, "m")


def test_pretrained_counts_agree() -> None:
    data = pretrained_card().to_dict()
    data["sources"] = ["ct", "mr", "pet"]
    with pytest.raises(BadInput, match="the number of sources is 3, but the architecture needs 2"):
        ModelCard.from_dict(data, "model.json")
    data = pretrained_card().to_dict()
    data["architecture"]["out_channels"] = 2
    with pytest.raises(BadInput, match="a pretrained model restores its input"):
        ModelCard.from_dict(data, "model.json")


def test_inference_defaults() -> None:
    assert InferenceConfig.from_dict({"tta": True}, "x") == InferenceConfig(tta=True)


# ------------------------------------------------------------------------------- files


def test_read_card_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(BadInput, match="model.json: missing: not a SAR model folder"):
        read_card(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "sarseg-model", "kind": ')
    with pytest.raises(BadInput, match="model.json: malformed JSON"):
        read_card(tmp_path)
    (tmp_path / "model.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(BadInput, match="model.json: malformed JSON"):
        read_card(tmp_path)
    monkeypatch.setattr(card_module, "MAX_CARD_BYTES", 100)
    (tmp_path / "model.json").write_text(json.dumps(segmentation_card().to_dict()))
    with pytest.raises(BadInput, match="a model card holds at most 100"):
        read_card(tmp_path)


def test_verify_the_weights(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, LEGACY_SEGMENTATION)
    card = read_card(folder)
    assert card.verify() == folder / "weights.safetensors" and sha256(folder / "weights.safetensors") == DIGEST
    (folder / "weights.safetensors").write_bytes(WEIGHT_BYTES[:-1])
    with pytest.raises(BadInput, match=r"weights.safetensors: SHA-256 does not match model.json"):
        card.verify()
    (folder / "weights.safetensors").unlink()
    with pytest.raises(BadInput, match="weights.safetensors: missing weights file"):
        card.verify()
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(WEIGHT_BYTES)
    (folder / "weights.safetensors").symlink_to(outside)
    with pytest.raises(BadInput, match="is not a plain file in the model folder"):
        card.verify()
