"""``sarseg.core.registry`` and ``sarseg models``: the user's versioned models and the read-only built-ins in
one listing; a name works wherever a model folder does; zips go out and come back checked."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

from sarseg import phantom
from sarseg.cli import main
from sarseg.core.card import Architecture, InferenceConfig, ModelCard, read_card, sha256
from sarseg.core.errors import BadInput
from sarseg.core.labels import SCHEMES
from sarseg.core.registry import Registry, split_version
from sarseg.io import DEFAULT_NORMALISATION, read_label, write_image
from sarseg.model import build_net, save_model
from cli_helpers import assert_bad, run_cli

TINY = (8, 16, 32, 64, 128)
SHAPE = (16, 32, 32)


def make_model(folder: Path, kind: str = "segmentation") -> Path:
    if kind == "segmentation":
        card = ModelCard(kind="segmentation", architecture=Architecture("resunet3d", 1, SCHEMES["binary"].outputs, TINY, 1, "instance"),
                         preset="tiny", normalisation=DEFAULT_NORMALISATION, modalities=("mr",), patch_size=(32, 32, 16),
                         labels=SCHEMES["binary"], inference=InferenceConfig(),
                         provenance={"intended_use": "research, not for clinical use", "steps": 0})
    else:
        card = ModelCard(kind="pretrained", architecture=Architecture("sar-resunet3d", 1, 1, TINY, 1, "instance", 16, 3, 2),
                         preset="tiny", normalisation=DEFAULT_NORMALISATION, sources=("mr", "ct"), input_size=(32, 32, 16),
                         scales={"sizes": [32.0, 64.0, 128.0], "unit": "mm"})
    torch.manual_seed(0)
    save_model(folder, build_net(card).state_dict(), card)
    return folder


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    make_model(tmp_path / "builtin" / "glioma")
    make_model(tmp_path / "builtin" / "base", kind="pretrained")
    make_model(tmp_path / "mine" / "liver")
    make_model(tmp_path / "mine" / "liver-v2")
    return Registry(tmp_path / "mine", [tmp_path / "builtin"])


def test_one_listing_yours_first_then_the_built_ins(registry: Registry, tmp_path: Path) -> None:
    assert [(m.name, m.builtin) for m in registry.list()] == [
        ("liver", False), ("liver-v2", False), ("base", True), ("glioma", True)]
    assert [m.name for m in registry.list(("segmentation",))] == ["liver", "liver-v2", "glioma"]
    (tmp_path / "mine" / "broken").mkdir()
    (tmp_path / "mine" / "broken" / "model.json").write_text("{")
    models, problems = registry.scan()
    assert len(models) == 4 and list(problems) == [tmp_path / "mine" / "broken"]
    make_model(tmp_path / "mine" / "glioma")  # yours shadows the built-in of the same name
    assert registry.get("glioma").builtin is False


def test_a_name_or_a_folder_stands_for_a_model(registry: Registry, tmp_path: Path) -> None:
    assert registry.resolve("glioma") == tmp_path / "builtin" / "glioma"
    assert registry.resolve(tmp_path / "mine" / "liver") == tmp_path / "mine" / "liver"
    with pytest.raises(BadInput, match="no model of that name.*liver-v2"):
        registry.resolve("lung")
    with pytest.raises(BadInput, match="no such model folder"):
        registry.resolve(tmp_path / "nowhere")


def test_new_models_take_the_next_free_version(registry: Registry, tmp_path: Path) -> None:
    assert split_version("liver-v12") == ("liver", 12) and split_version("liver") == ("liver", 1)
    assert registry.next_version("liver") == "liver-v3"
    assert registry.reserve("liver").name == "liver-v3"
    assert registry.reserve("new model", new_version=False).name == "new_model"
    assert registry.reserve("glioma", new_version=False).name == "glioma-v2"  # a built-in's name is taken


def test_export_then_import_gives_a_new_version_with_the_same_weights(registry: Registry, tmp_path: Path) -> None:
    archive = registry.export_zip("glioma", tmp_path / "glioma.zip")
    assert sorted(zipfile.ZipFile(archive).namelist()) == ["glioma/model.json", "glioma/weights.safetensors"]
    first = registry.import_zip(archive)
    second = registry.import_zip(archive)
    assert (first.name, second.name) == ("glioma-v2", "glioma-v3") and not first.builtin  # the built-in keeps its name
    assert registry.get("glioma").builtin
    assert first.folder.parent == tmp_path / "mine"
    assert sha256(first.folder / "weights.safetensors") == sha256(tmp_path / "builtin" / "glioma" / "weights.safetensors")
    assert read_card(first.folder).to_dict() == read_card(tmp_path / "builtin" / "glioma").to_dict()


def test_export_refuses_tampered_weights_and_an_existing_file(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "taken.zip").write_bytes(b"mine")
    with pytest.raises(BadInput, match="exists"):
        registry.export_zip("liver", tmp_path / "taken.zip")
    assert (tmp_path / "taken.zip").read_bytes() == b"mine"
    with open(tmp_path / "mine" / "liver" / "weights.safetensors", "ab") as handle:
        handle.write(b"x")
    with pytest.raises(BadInput, match="SHA-256"):
        registry.export_zip("liver", tmp_path / "liver.zip")
    assert not (tmp_path / "liver.zip").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".zip"] == ["taken.zip"]


def test_models_command(registry: Registry, tmp_path: Path, capsys) -> None:
    root = ["--root", tmp_path / "mine"]
    rc, _ = run_cli(capsys, ["models", "export", "liver-v2", tmp_path / "l.zip", *root])
    assert rc == 0 and (tmp_path / "l.zip").is_file()
    rc, _ = run_cli(capsys, ["models", "import", tmp_path / "l.zip", *root])
    assert rc == 0 and (tmp_path / "mine" / "liver-v3" / "model.json").is_file()
    capsys.readouterr()
    assert main(["models", "list", "--json", *map(str, root)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in listed if not row["builtin"]] == ["liver", "liver-v2", "liver-v3"]
    assert listed[0]["modalities"] == ["mr"] and listed[0]["segments"] == ["tumor"]
    capsys.readouterr()
    main_rc = main(["models", "show", "liver", *map(str, root)])
    shown = capsys.readouterr().out
    assert main_rc == 0 and "inputs, in this order: mr" in shown and "research, not for clinical use" in shown
    assert_bad(*run_cli(capsys, ["models", "show", "lung", *root]), "lung", "no model of that name")
    assert_bad(*run_cli(capsys, ["models", "export", "liver", tmp_path / "l.zip", *root]), "l.zip", "exists")
    (tmp_path / "evil.zip").write_bytes(b"PK\x03\x04 not really")
    assert_bad(*run_cli(capsys, ["models", "import", tmp_path / "evil.zip", *root]), "evil.zip", "zip")


def test_segment_and_finetune_take_a_model_name(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SARSEG_MODELS", str(tmp_path / "models"))
    make_model(tmp_path / "models" / "tumor")
    images, label = phantom.make_case(3, SHAPE)
    image = write_image(tmp_path / "mr.nii.gz", images["mr"], phantom.geometry(SHAPE))
    rc, err = run_cli(capsys, ["segment", "--model", "tumor", "--input", image, "--output", tmp_path / "seg.nii.gz"])
    assert rc == 0, err
    assert read_label(tmp_path / "seg.nii.gz").shape == SHAPE
    assert_bad(*run_cli(capsys, ["segment", "--model", "lung", "--input", image, "--output", tmp_path / "s2.nii.gz"]),
               "lung", "no model of that name", "tumor")
    labels = write_image(tmp_path / "label.nii.gz", (label > 0).astype("int16"), phantom.geometry(SHAPE))
    assert_bad(*run_cli(capsys, ["finetune", "--init", "nothing-here", "--images", image, "--labels", labels,
                                 "--out", tmp_path / "ft"]), "nothing-here", "no model of that name")
    assert not (tmp_path / "ft").exists() and not (tmp_path / "s2.nii.gz").exists()


def test_the_card_is_described_for_a_person(registry: Registry, tmp_path: Path) -> None:
    """What `sarseg models show` and the Slicer module print: inputs, training, validation, intended use."""
    from SARSegmentationLib.models import FolderModelStore
    from sarseg.core.registry import describe

    folder = tmp_path / "builtin" / "glioma"
    data = json.loads((folder / "model.json").read_text())
    data["provenance"].update(validation={"cases": ["A", "B"], "dice": {"whole tumor": 0.8512, "tumor core": 0.7}},
                              licenses=["BraTS terms", "CC BY 3.0"], input_requirements="skull-stripped MR")
    (folder / "model.json").write_text(json.dumps(data))
    text = describe(read_card(folder))
    assert "inputs, in this order: mr" in text and "segments: tumor" in text
    assert "validation: Dice whole tumor 0.851, tumor core 0.700 on 2 held-back case(s): A, B" in text
    assert "data licenses: BraTS terms; CC BY 3.0" in text and "input must be: skull-stripped MR" in text
    assert "intended use: research, not for clinical use" in text
    shown = FolderModelStore(tmp_path / "mine", [tmp_path / "builtin"]).get("glioma").description
    assert shown == "glioma (built-in, read-only)\n" + text
