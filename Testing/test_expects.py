"""``sarseg.core.expects``: a model card says what its input must look like; a scan that does not gets a
warning (on stderr from ``sarseg segment``, in the module), measured on the real scans."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sarseg import phantom
from sarseg.core.card import read_card
from sarseg.core.errors import BadInput
from sarseg.core.expects import Expectations, background_fraction
from sarseg.io import read_image, write_image
from cli_helpers import run_cli
from test_registry import SHAPE, make_model

BRATS = Expectations((1.0, 1.0, 1.0), 0.5, True)


def test_a_scan_like_the_training_data_gets_no_warning() -> None:
    assert BRATS.warnings((1.0, 1.0, 1.0), 0.83) == []
    assert BRATS.warnings((0.9, 1.2, 1.0), 0.83) == []
    assert Expectations().warnings((0.2, 0.2, 9.0), 0.0) == []  # a card that expects nothing


def test_voxel_size_and_skull_stripping_are_named() -> None:
    spacing, stripped = BRATS.warnings((0.78, 0.78, 6.5), 0.05)
    assert "0.78 x 0.78 x 6.5 mm" in spacing and "1 x 1 x 1 mm" in spacing
    assert "5% of the voxels are background" in stripped and "skull-stripped" in stripped


@pytest.mark.parametrize("expects, problem", [
    ({"spacing_mm": [1, 1]}, "spacing_mm"), ({"spacing_mm": [1, 1, -1]}, "spacing_mm[2]"),
    ({"spacing_tolerance": "wide"}, "spacing_tolerance"), ({"skull_stripped": "yes"}, "skull_stripped"),
    ({"resample": True}, "resample"), ([1, 2], "expects"),
])
def test_a_bad_expects_field_is_refused_naming_it(tmp_path: Path, expects, problem: str) -> None:
    folder = make_model(tmp_path / "m")
    data = json.loads((folder / "model.json").read_text())
    data["expects"] = expects
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(BadInput, match=problem.replace("[", r"\[").replace("]", r"\]")):
        read_card(folder)


def test_segment_warns_and_still_segments(tmp_path: Path, capsys) -> None:
    folder = make_model(tmp_path / "m")
    data = json.loads((folder / "model.json").read_text())
    data["expects"] = BRATS.to_dict()
    (folder / "model.json").write_text(json.dumps(data))
    assert read_card(folder).expects == BRATS
    images, _ = phantom.make_case(3, SHAPE)
    image = write_image(tmp_path / "mr.nii.gz", images["mr"], phantom.geometry(SHAPE))
    rc, err = run_cli(capsys, ["segment", "--model", folder, "--input", image, "--output", tmp_path / "seg.nii.gz"])
    assert rc == 0 and (tmp_path / "seg.nii.gz").is_file()
    assert f"sarseg: warning: {image}: voxels of" in err and "skull-stripped" in err


def test_background_share_tells_stripped_brains_from_other_scans(shared_data: Path) -> None:
    """Measured: BraTS 2018 and 2015 (skull-stripped) 0.83; TCGA head MR, sarcoma MR, lung CT 0.06-0.09."""
    case = shared_data / "brats2018" / "Brats18_TCIA10_639_1" / "Brats18_TCIA10_639_1"
    brats = read_image([f"{case}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")])
    assert background_fraction(brats.array) > 0.8 and BRATS.warnings(brats.geometry.spacing, 0.83) == []
    for scan in ("tcga_gbm/brain1_image.nrrd", "sarcoma/STS_001_MR_T1_image.nii.gz", "lung_ct/image.nii.gz"):
        image = read_image([shared_data / scan])
        assert background_fraction(image.array) < 0.1, scan
        assert len(BRATS.warnings(image.geometry.spacing, background_fraction(image.array))) == 2, scan
    assert background_fraction(np.zeros((4, 3, 3))) == 1.0


def test_the_module_asks_before_segmenting_a_scan_unlike_the_training_data(tmp_path: Path) -> None:
    """SegmentationLogic.input_warnings against real MRML: the widget shows these and asks to go on."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for plain Python) is not installed")
    from sarseg import mrml
    from SARSegmentationLib.models import FolderModelStore
    from SARSegmentationLib.scene import MRMLSceneAdapter
    from SARSegmentationLib.segmentation import SegmentationLogic
    from test_slicer_logic import write_model

    scene = slicer.vtkMRMLScene()
    images, _ = phantom.make_case(3, SHAPE)
    head = mrml.add_volume_node(scene, images["mr"], "head MR", phantom.geometry(SHAPE))
    stripped = np.where(images["mr"] > np.percentile(images["mr"], 50), images["mr"], images["mr"].min())
    one_mm = dataclasses.replace(phantom.geometry(SHAPE), spacing=(1.0, 1.0, 1.0))
    brain = mrml.add_volume_node(scene, stripped.astype(np.float32), "brain", one_mm)
    write_model(tmp_path / "models" / "glioma", expects=BRATS.to_dict())
    write_model(tmp_path / "models" / "any")
    logic = SegmentationLogic(None, FolderModelStore(tmp_path / "models", []), MRMLSceneAdapter(scene))
    warnings = logic.input_warnings("glioma", [head])
    assert len(warnings) == 2 and "skull-stripped" in warnings[1]
    assert logic.input_warnings("glioma", [brain]) == []
    assert logic.input_warnings("any", [head]) == [] and logic.input_warnings("glioma", [None]) == []
