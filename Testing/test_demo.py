"""``sarseg demo``: the whole loop on built-in synthetic data writes everything it promises."""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk

from sarseg.cli import main


def test_demo_writes_models_segmentation_picture_and_metrics(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pretrain-steps", "10", "--finetune-steps", "20", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("pretrained_model", "segmentation_model"):
        assert (Path(result[key]) / "model.json").is_file()
    segmentation = sitk.ReadImage(result["segmentation"])
    unseen = sitk.ReadImage(str(out / "data" / "case007_mr.nii.gz"))
    assert segmentation.GetSize() == unseen.GetSize() and segmentation.GetSpacing() == unseen.GetSpacing()
    assert segmentation.GetMetaData("Segment0_Name") == "tumor"
    picture = sitk.ReadImage(result["overlay_png"])
    assert picture.GetNumberOfComponentsPerPixel() == 3 and picture.GetSize()[1] == 256
    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics[0]["name"] == "tumor" and 0.0 <= metrics[0]["dice"] <= 1.0


def test_demo_refuses_a_non_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"
