"""``sarseg.model``: weights saved and loaded through the model card; the SHA-256 and the architecture
the card describes both bind them (tampered or mismatched weights are refused naming the weights
file, exit 2 from the command line); folders written in the legacy format keep loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import save_file

from sarseg import phantom
from sarseg.core.card import Architecture, InferenceConfig, ModelCard, Weights, read_card, sha256
from sarseg.core.errors import BadInput
from sarseg.core.labels import SCHEMES
from sarseg.infer import Segmenter
from sarseg.io import DEFAULT_NORMALISATION, write_image
from sarseg.model import build_net, load_model, save_model
from sarseg.nets import SARNet, UNet3D
from cli_helpers import assert_bad, run_cli

TINY = (8, 16, 32, 64, 128)
SHAPE = (16, 32, 32)  # z, y, x: one patch of the tiny preset


def segmentation_card(labels=SCHEMES["binary"], features=TINY) -> ModelCard:
    return ModelCard(kind="segmentation", architecture=Architecture("resunet3d", 1, labels.outputs, features, 1, "instance"),
                     preset="tiny", normalisation=DEFAULT_NORMALISATION, modalities=("mr",), patch_size=(32, 32, 16),
                     labels=labels, inference=InferenceConfig(), provenance={"steps": 0})


def pretrained_card() -> ModelCard:
    return ModelCard(kind="pretrained", architecture=Architecture("sar-resunet3d", 1, 1, TINY, 1, "instance", 16, 3, 2),
                     preset="tiny", normalisation=DEFAULT_NORMALISATION, sources=("mr", "ct"), input_size=(32, 32, 16),
                     scales={"sizes": [32.0, 64.0, 128.0], "unit": "mm"})


def saved(folder: Path, card: ModelCard) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    state = build_net(card).state_dict()
    save_model(folder, state, card)
    return folder, state


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    images, _ = phantom.make_case(3, SHAPE)
    return write_image(tmp_path_factory.mktemp("case") / "mr.nii.gz", images["mr"], phantom.geometry(SHAPE))


def rewrite(folder: Path, **changes) -> None:
    """Edit model.json as someone with a text editor would (the weights and their SHA-256 stay)."""
    data = json.loads((folder / "model.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    (folder / "model.json").write_text(json.dumps(data))


# ------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("make, net", [(segmentation_card, UNet3D), (pretrained_card, SARNet)])
def test_save_and_load_round_trip(make, net, tmp_path: Path) -> None:
    card = make()
    folder, state = saved(tmp_path / "model", card)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.safetensors"]
    loaded, weights = load_model(folder)
    assert loaded == card and loaded.path == folder / "model.json"
    assert loaded.weights.sha256 == sha256(folder / "weights.safetensors")
    assert weights.keys() == state.keys() and all(torch.equal(weights[k], state[k]) for k in state)
    assert isinstance(build_net(loaded), net)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_float32(dtype, tmp_path: Path, case: Path) -> None:
    """Built-in models ship as fp16 (half the size); they compute in float32 and segment as the original."""
    full, state = saved(tmp_path / "full", segmentation_card())
    half = tmp_path / "half"
    save_model(half, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, segmentation_card())
    assert (half / "weights.safetensors").stat().st_size < 0.6 * (full / "weights.safetensors").stat().st_size
    _, weights = load_model(half)
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    assert max(float((weights[k] - state[k]).abs().max()) for k in state if state[k].is_floating_point()) < 1e-2
    from sarseg.io import read_image

    image = read_image([case], ("mr",))
    labels = [Segmenter.load(folder, torch.device("cpu"))(image)[0] for folder in (full, half)]
    assert np.mean(labels[0] == labels[1]) > 0.99


def test_tampered_weights_are_refused(tmp_path: Path, case: Path, capsys) -> None:
    folder, _ = saved(tmp_path / "model", segmentation_card())
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(BadInput, match="weights.safetensors: SHA-256 does not match model.json"):
        load_model(folder)
    rc, err = run_cli(capsys, ["segment", "--model", folder, "--input", case, "--output", tmp_path / "seg.nii.gz"])
    assert_bad(rc, err, str(folder / "weights.safetensors"), "SHA-256")
    assert not (tmp_path / "seg.nii.gz").exists()


@pytest.mark.parametrize("change, problem", [
    ({"architecture": {"features": [16, 32, 64, 128, 256]}}, "tensor 'encoder.0.conv.unit0.conv.weight' has shape [8, 1, 3, 3, 3], "
                                                             "the architecture needs [16, 1, 3, 3, 3]"),
    ({"architecture": {"res_units": 2}}, "tensor(s) missing"),
    ({"architecture": {"out_channels": 3}, "label_mode": "regions",
      "labels": [{"name": n, "value": p, "values": list(v)} for n, p, v in
                 zip(SCHEMES["brats"].names, SCHEMES["brats"].paint, SCHEMES["brats"].values)]},
     "tensor 'head.0.conv.weight' has shape [16, 1, 3, 3, 3], the architecture needs [16, 3, 3, 3, 3]"),
])
def test_weights_must_fit_the_architecture_the_card_describes(change, problem, tmp_path: Path, case: Path, capsys) -> None:
    folder, _ = saved(tmp_path / "model", segmentation_card())
    rewrite(folder, **change)
    with pytest.raises(BadInput) as caught:
        load_model(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / "weights.safetensors") + ": does not fit the architecture in model.json")
    assert problem in message
    rc, err = run_cli(capsys, ["segment", "--model", folder, "--input", case, "--output", tmp_path / "seg.nii.gz"])
    assert_bad(rc, err, str(folder / "weights.safetensors"), "does not fit the architecture")
    assert not (tmp_path / "seg.nii.gz").exists()


def test_weights_with_tensors_the_architecture_lacks(tmp_path: Path) -> None:
    card = segmentation_card()
    folder = tmp_path / "model"
    folder.mkdir()
    state = {**build_net(card).state_dict(), "extra.weight": torch.zeros(2)}
    save_file(state, str(folder / "weights.safetensors"))
    card.weights = Weights("weights.safetensors", sha256(folder / "weights.safetensors"))
    card.write(folder)
    with pytest.raises(BadInput, match="1 tensor\\(s\\) it does not have, first 'extra.weight'"):
        load_model(folder)


def test_segment_builds_the_network_from_the_card(tmp_path: Path, case: Path) -> None:
    """A card whose provenance says something else does not matter: the architecture decides."""
    card = segmentation_card(SCHEMES["brats"], features=(8, 8, 16, 16, 32))
    folder, _ = saved(tmp_path / "model", card)
    rewrite(folder, provenance={"config": {"net": {"features": [64, 64, 64, 64, 64]}}})
    segmenter = Segmenter.load(folder, torch.device("cpu"))
    assert segmenter.config.net.features == (8, 8, 16, 16, 32) and segmenter.labels == SCHEMES["brats"]
    assert segmenter.net.head[0].conv.out_channels == 3


# ------------------------------------------------------------------------------- legacy folders


def legacy_folder(folder: Path, card: ModelCard, **architecture) -> Path:
    """A model folder as sarseg wrote it before the rename: ``"format": "sar-model", "format_version": 1``,
    no ``out_channels`` in a pretrained model's architecture."""
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    save_file(build_net(card).state_dict(), str(folder / "weights.safetensors"))
    data = card.to_dict()
    data.update(format="sar-model", format_version=1,
                weights={"file": "weights.safetensors", "sha256": sha256(folder / "weights.safetensors")})
    if card.kind == "pretrained":
        del data["architecture"]["out_channels"]
    data["architecture"].update(architecture)
    (folder / "model.json").write_text(json.dumps(data, indent=2))
    return folder


def test_a_legacy_segmentation_folder_segments(tmp_path: Path, case: Path, capsys) -> None:
    folder = legacy_folder(tmp_path / "old", segmentation_card(SCHEMES["brats"]))
    output = tmp_path / "seg.nii.gz"
    rc, err = run_cli(capsys, ["segment", "--model", folder, "--input", case, "--output", output])
    assert rc == 0, err
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    assert label.shape == SHAPE and set(np.unique(label).tolist()) <= {0, 1, 2, 4}
    assert json.loads((folder / "model.json").read_text())["format"] == "sar-model"  # read, never rewritten


def test_a_legacy_pretrained_folder_starts_fine_tuning(tmp_path: Path, capsys) -> None:
    folder = legacy_folder(tmp_path / "old", pretrained_card())
    assert read_card(folder).architecture.out_channels == 1
    cases = phantom.write_cases(tmp_path / "cases", 1)
    out = tmp_path / "new"
    rc, err = run_cli(capsys, ["finetune", "--init", folder, "--images", cases[0]["mr"], "--labels", cases[0]["label"],
                               "--out", out, "--preset", "tiny", "--steps", "2", "--modalities", "mr"])
    assert rc == 0, err
    assert "copied 54 tensors, adapted 0, initialised 6 (encoder: 30 of 30 taken)" in err
    new = read_card(out)
    assert new.to_dict()["format"] == "sarseg-model" and new.provenance["init"]["kind"] == "pretrained"


def test_a_legacy_folder_without_sizes_is_refused_cleanly(tmp_path: Path, case: Path, capsys) -> None:
    folder = legacy_folder(tmp_path / "old", segmentation_card())
    data = json.loads((folder / "model.json").read_text())
    data["architecture"] = {"name": "resunet3d", "in_channels": 1}
    (folder / "model.json").write_text(json.dumps(data))
    rc, err = run_cli(capsys, ["segment", "--model", folder, "--input", case, "--output", tmp_path / "seg.nii.gz"])
    assert_bad(rc, err, str(folder / "model.json"), "has no architecture.features", "cannot segment")
