"""``sarseg demo``: the whole loop on built-in synthetic data writes everything it promises, learns the
tumor, and says which stage each progress bar belongs to; the overlay picture's views, legend and outline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sarseg.cli import main
from sarseg.figures import REFERENCE_COLOR, VIEWS, overlay_figure

# Whole-tumor Dice of this short demo (10 pretraining, 150 fine-tuning steps) on the unseen case, measured
# with `sarseg demo --seed 0..4`: 0.894, 0.891, 0.681, 0.791, 0.572 (with 60 fine-tuning steps: 0.12-0.41).
# The floor keeps a margin below the worst seed for other thread counts and BLAS builds.
DICE_FLOOR = 0.45


def test_demo_writes_models_segmentation_picture_and_metrics(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--pretrain-steps", "10", "--finetune-steps", "150", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    for key in ("pretrained_model", "segmentation_model"):
        assert (Path(result[key]) / "model.json").is_file()
    segmentation = sitk.ReadImage(result["segmentation"])
    unseen = sitk.ReadImage(str(out / "data" / "case007_mr.nii.gz"))
    assert segmentation.GetSize() == unseen.GetSize() and segmentation.GetSpacing() == unseen.GetSpacing()
    assert segmentation.GetMetaData("Segment0_Name") == "tumor"
    assert Path(result["overlay_png"]).read_bytes().startswith(b"\x89PNG")
    metrics = json.loads(Path(result["metrics"]).read_text())
    assert metrics[0]["name"] == "tumor" and metrics[0]["dice"] > DICE_FLOOR, metrics
    stages = [captured.err.index(f"sarseg demo: {stage}") for stage in ("pretraining", "fine-tuning", "segmenting")]
    assert stages == sorted(stages)
    assert stages[0] < captured.err.index("10/10") < stages[1] < captured.err.index("150/150") < stages[2]


def test_demo_refuses_a_non_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_overlay_names_the_views_labels_and_reference() -> None:
    image = np.random.default_rng(0).normal(size=(20, 30, 40)).astype(np.float32)
    label = np.zeros(image.shape, dtype=np.int16)
    label[8:12, 10:20, 15:25], label[9:11, 13:17, 18:22] = 1, 2
    reference = np.zeros_like(label)
    reference[7:13, 9:21, 14:26] = 1
    legend = {1: ("edema", (0.0, 1.0, 0.0)), 2: ("core", (1.0, 0.0, 0.0))}
    figure = overlay_figure(image, label, (2.0, 1.0, 1.0), legend, reference)
    assert [ax.get_title() for ax in figure.axes] == list(VIEWS)
    (shown,) = figure.legends
    assert [t.get_text() for t in shown.get_texts()] == ["edema", "core", "reference"]
    handles = shown.legend_handles
    assert [tuple(h.get_facecolor()[:3]) for h in handles[:2]] == [(0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]
    assert handles[2].get_color() == REFERENCE_COLOR
    assert all(ax.collections for ax in figure.axes)  # the reference outline in every view
    without = overlay_figure(image, label, (2.0, 1.0, 1.0), legend)
    assert [t.get_text() for t in without.legends[0].get_texts()] == ["edema", "core"]
    assert not any(ax.collections for ax in without.axes)
