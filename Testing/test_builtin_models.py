"""The built-in models: shipped in the extension (CMake) and the wheel, fp16 within the size budget, each
with a model card that says what it is for, what it was trained on and how it scored."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from safetensors import safe_open

from sarseg.core.card import read_card
from sarseg.core.registry import Registry, builtin_root
from test_packaging import ENGINE_MODULE, ROOT, _resolve, _module_sets

MODELS = ROOT / "Resources" / "Models"
BUDGET_BYTES = 25_000_000  # all built-ins together, in the repository
BUILTINS = sorted(p.name for p in MODELS.iterdir() if (p / "model.json").is_file()) if MODELS.is_dir() else []
EXPECTED = {"sar-base": "pretrained", "glioma-mr4": "segmentation", "lesion-click": "segmentation"}  # names the README, CLI, modules use
PROMPTABLE = {"lesion-click"}


def model_files() -> list[Path]:
    return sorted(p for name in BUILTINS for p in (MODELS / name).iterdir() if p.is_file())


def test_the_engine_finds_the_built_ins_in_a_checkout() -> None:
    assert builtin_root() == MODELS
    assert sorted(m.name for m in Registry(ROOT / "no-user-models").list() if m.builtin) == BUILTINS


def test_every_built_in_file_ships_in_the_extension_and_fits_the_budget() -> None:
    _, listed = _module_sets(ENGINE_MODULE)
    shipped = sorted(_resolve(ENGINE_MODULE, f) for f in listed("SAR_BUILTIN_MODEL_FILES"))
    assert shipped == model_files(), f"list these in SAR_BUILTIN_MODEL_FILES in {ENGINE_MODULE}/CMakeLists.txt"
    total = sum(p.stat().st_size for p in model_files())
    assert total <= BUDGET_BYTES, f"the built-in models take {total:,} bytes, over the {BUDGET_BYTES:,} budget"


@pytest.mark.parametrize("name", BUILTINS)
def test_each_built_in_is_fp16_with_a_full_card(name: str) -> None:
    card = read_card(MODELS / name)
    weights = card.verify()
    with safe_open(str(weights), "pt") as handle:
        dtypes = {str(handle.get_slice(k).get_dtype()) for k in handle.keys()}
    assert dtypes <= {"F16", "BF16", "I64"}, dtypes
    info = card.provenance
    for key in ("intended_use", "training_data", "licenses", "recipe", "steps"):
        assert info.get(key), f"{name}: model.json provenance has no {key}"
    assert "not for clinical use" in info["intended_use"]
    if name in EXPECTED:
        assert card.kind == EXPECTED[name] and card.promptable == (name in PROMPTABLE)
    if card.kind == "segmentation":
        assert info.get("input_requirements")
        validation = info["validation"]
        if card.promptable:  # scored by sarseg bench interactive on each kept-back set
            assert validation["protocol"] and validation["scores"]
            assert all(s["cases"] and 0 < s["dice_1"] <= 1 for s in validation["scores"].values())
        else:
            assert card.expects is not None
            assert validation["cases"] and set(validation["dice"]) == set(card.labels.names)


def test_the_wheel_carries_the_built_ins(tmp_path: Path) -> None:
    if not BUILTINS:
        pytest.skip("no built-in model in Resources/Models yet (make models)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sarseg-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"sarseg/builtin_models/{p.parent.name}/{p.name}" for p in model_files()}
    assert expected <= names, sorted(expected - names)
    card = json.loads(zipfile.ZipFile(wheel).read(f"sarseg/builtin_models/{BUILTINS[0]}/model.json"))
    assert card["format"] == "sarseg-model"


def test_the_cards_say_what_was_measured() -> None:
    """The module's model box and ``sarseg models show`` print the bench's verdict on SAR and the clicks' Dice."""
    from sarseg.core.registry import describe

    if not {"sar-base", "lesion-click"} <= set(BUILTINS):
        pytest.skip("sar-base and lesion-click not in Resources/Models (make models)")
    assert "evidence: measured here" in describe(read_card(MODELS / "sar-base"))
    assert "does not beat Models Genesis" in describe(read_card(MODELS / "sar-base"))
    shown = describe(read_card(MODELS / "lesion-click"))
    assert "Dice after 1/3/5 simulated clicks on held-back cases: BraTS flair, whole tumor " in shown
