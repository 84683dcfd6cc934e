"""``sarseg finetune``, ``sarseg segment`` and ``sarseg evaluate`` end to end on small synthetic phantoms (labels
1 rim / 2 core) and one real case: model folder contents, output on the exact input grid, Slicer
``.seg.nrrd`` metadata, probabilities, TTA, ROI, metrics without NaN, and bad input (exit 2, a message
naming the file or option and the problem, nothing written).

The real command line runs in-process (``sarseg.cli.main``); models are trained once per module with the
tiny preset for a few steps (their quality does not matter here).
"""

from __future__ import annotations

import io
import json
import math
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sarseg import phantom
from sarseg.cli import EXIT_BAD_INPUT, EXIT_OK, main
from sarseg.config import finetune_config
from sarseg.core.card import Architecture, InferenceConfig, ModelCard, sha256
from sarseg.core.labels import SCHEMES, LabelScheme
from sarseg.finetune import segmentation_loss, spatial_augmentation
from sarseg.io import Geometry, write_image
from sarseg.model import build_net, load_model, save_model
from cli_helpers import assert_bad, run_cli


pytestmark = pytest.mark.usefixtures("one_thread")


def run(*argv: object) -> tuple[int, str, str]:
    """``sarseg ARGV`` in-process: exit code, stdout, stderr (usable in module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def meta_of(folder: Path) -> dict:
    return json.loads((Path(folder) / "model.json").read_text())


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 0.0) -> None:
    """Size equal; spacing, origin and direction equal (``tol`` > 0 only where the file format rounds)."""
    assert a.GetSize() == b.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        if tol == 0.0:
            assert getattr(a, get)() == getattr(b, get)(), get
        else:
            np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), rtol=0, atol=tol, err_msg=get)


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        pytest.fail(f"JSON holds {constant}")

    return json.loads(text, parse_constant=refuse)


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("model.json", "weights.safetensors"):
        shutil.copy(src / name, dst / name)
    return dst


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[dict[str, str]]:
    return phantom.write_cases(tmp_path_factory.mktemp("phantoms"), 4)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cases) -> Path:
    out = tmp_path_factory.mktemp("pre") / "model"
    rc, _, err = run("pretrain", "--out", out, "--preset", "tiny", "--steps", "20", "--progress", "json",
                     "--data", f"mr={cases[0]['mr']}", f"mr={cases[1]['mr']}", f"ct={cases[0]['ct']}")
    assert rc == EXIT_OK, err
    return out


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, cases, pretrained) -> tuple[Path, list[dict]]:
    """Fine-tuned from the pretrained model on all four MR phantoms (three train, one validates)."""
    out = tmp_path_factory.mktemp("ft") / "model"
    rc, stdout, err = run("finetune", "--init", pretrained, "--images", *[c["mr"] for c in cases],
                          "--labels", *[c["label"] for c in cases], "--out", out, "--preset", "tiny",
                          "--steps", "30", "--modalities", "mr", "--progress", "json")
    assert rc == EXIT_OK, err
    return out, events(stdout)


@pytest.fixture(scope="module")
def model(finetuned) -> Path:
    return finetuned[0]


@pytest.fixture(scope="module")
def case(cases) -> dict[str, str]:
    return cases[3]


# ---------------------------------------------------------------- 1. finetune


def test_finetune_writes_a_described_segmentation_model(finetuned, pretrained, cases) -> None:
    out, log = finetuned
    meta = meta_of(out)
    assert meta["kind"] == "segmentation"
    assert meta["modalities"] == ["mr"] and meta["in_channels"] == 1
    assert [l["name"] for l in meta["labels"]] == ["label 1", "label 2"]  # auto scheme from the phantom labels
    assert [l["value"] for l in meta["labels"]] == [1, 2]
    assert [l["values"] for l in meta["labels"]] == [[1], [2]]
    for label in meta["labels"]:
        assert len(label["color"]) == 3 and all(0.0 <= c <= 1.0 for c in label["color"])
    assert meta["architecture"]["out_channels"] == 3  # background + two classes

    provenance = meta["provenance"]
    pre_sha = meta_of(pretrained)["weights"]["sha256"]
    assert pre_sha == sha256(pretrained / "weights.safetensors")
    assert provenance["init"]["weights_sha256"] == pre_sha
    assert provenance["init"]["kind"] == "pretrained"
    train, val = provenance["data"]["train"], provenance["data"]["validation"]
    assert [c["label"] for c in train] == [c["label"] for c in cases[:3]]
    assert [c["label"] for c in val] == [cases[3]["label"]]
    assert [c["images"] for c in train] == [[c["mr"]] for c in cases[:3]]
    best = provenance["best"]  # validation ran (more than one case): the folder holds the best model
    assert 0.0 <= best["dice"] <= 1.0 and best["step"] in (25, 30)
    assert set(best["per_label"]) == {"label 1", "label 2"}
    assert provenance["steps"] == best["step"]

    start = next(e for e in log if e["event"] == "start")
    assert start["train_cases"] == 3 and start["validation_cases"] == 1
    assert start["transfer"]["copied"] > 0 and start["transfer"]["adapted"] == 0
    assert [e["step"] for e in log if e["event"] == "validation"] == [25, 30]
    load_model(out)  # weights match their SHA-256


def test_max_cases_one_from_scratch(tmp_path: Path, cases) -> None:
    out = tmp_path / "model"
    rc, stdout, err = run("finetune", "--init", "scratch", "--images", *[c["mr"] for c in cases],
                          "--labels", *[c["label"] for c in cases], "--out", out, "--preset", "tiny",
                          "--steps", "4", "--modalities", "mr", "--max-cases", "1", "--progress", "json")
    assert rc == EXIT_OK, err
    provenance = meta_of(out)["provenance"]
    assert [c["label"] for c in provenance["data"]["train"]] == [cases[0]["label"]]
    assert len(provenance["data"]["validation"]) == 1
    assert provenance["init"] == {"path": "scratch", "kind": "scratch", "weights_sha256": None}
    start = next(e for e in events(stdout) if e["event"] == "start")
    assert start["train_cases"] == 1 and start["transfer"] == {}


def test_two_channels_adapt_the_first_convolution(tmp_path: Path, cases, pretrained) -> None:
    out = tmp_path / "model"
    two = cases[:2]
    rc, stdout, err = run("finetune", "--init", pretrained, "--images", *[f"{c['mr']},{c['ct']}" for c in two],
                          "--labels", *[c["label"] for c in two], "--out", out, "--preset", "tiny",
                          "--steps", "3", "--modalities", "mr,ct", "--progress", "json")
    assert rc == EXIT_OK, err
    start = next(e for e in events(stdout) if e["event"] == "start")
    assert start["transfer"]["adapted"] >= 1 and start["transfer"]["copied"] > 0
    meta = meta_of(out)
    assert meta["modalities"] == ["mr", "ct"] and meta["in_channels"] == 2
    assert meta["provenance"]["data"]["train"][0]["images"] == [two[0]["mr"], two[0]["ct"]]

    seg = tmp_path / "seg.nii.gz"  # and the two-channel model segments a two-channel case
    rc, _, err = run("segment", "--model", out, "--input", cases[3]["mr"], cases[3]["ct"], "--output", seg)
    assert rc == EXIT_OK, err
    same_grid(sitk.ReadImage(str(seg)), sitk.ReadImage(cases[3]["mr"]))


@pytest.mark.parametrize("scheme, names, paint", [
    ("binary", ["tumor"], {1}),
    ("brats", ["whole tumor", "tumor core", "enhancing tumor"], {1, 2, 4}),
])
def test_label_schemes(scheme: str, names: list[str], paint: set[int], tmp_path: Path, cases) -> None:
    out = tmp_path / "model"
    two = cases[:2]
    rc, _, err = run("finetune", "--init", "scratch", "--images", *[c["mr"] for c in two],
                     "--labels", *[c["label"] for c in two], "--out", out, "--preset", "tiny", "--steps", "3",
                     "--modalities", "mr", "--label-scheme", scheme, "--progress", "json")
    assert rc == EXIT_OK, err
    meta = meta_of(out)
    assert meta["label_mode"] == "regions"
    assert [l["name"] for l in meta["labels"]] == names
    assert meta["architecture"]["out_channels"] == len(names)  # one sigmoid per region
    seg = tmp_path / "seg.nii.gz"
    rc, _, err = run("segment", "--model", out, "--input", cases[3]["mr"], "--output", seg)
    assert rc == EXIT_OK, err
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(seg)))).tolist()) <= paint | {0}


def test_region_loss_scores_each_region_and_the_background() -> None:
    """Overlapping regions need a sigmoid and binary cross-entropy per channel. MONAI's DiceCELoss applies
    softmax cross-entropy to any multi-channel input (even with sigmoid=True): background voxels, an
    all-zero target, then add no cross-entropy and a network marking everything is barely penalised."""
    config = finetune_config("tiny", {"labels": SCHEMES["brats"].to_dict()})
    loss = segmentation_loss(config)
    target = torch.zeros(2, 3, 8, 8, 8)
    target[:, 0, 2:6, 2:6, 2:6] = 1.0  # whole tumor
    target[:, 1, 3:5, 3:5, 3:5] = 1.0  # core, inside it
    target[:, 2, 3:4, 3:4, 3:4] = 1.0  # enhancing, inside the core
    right = 20.0 * (2 * target - 1)
    everything = torch.full_like(target, 20.0)
    assert float(loss(right, target)) < 1e-3
    assert float(loss(everything, target)) > 10.0  # 20 nats of BCE on every background voxel
    softmax_ce = torch.nn.functional.cross_entropy(everything, target)
    assert float(softmax_ce) < 2.0  # what the multi-channel softmax CE would have charged


# ---------------------------------------------------------------- 2. segment


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])  # region masks; class indices
def test_spatial_augmentation_moves_image_and_target_together(dtype: torch.dtype) -> None:
    """A patch rotated and zoomed: the same shape, target values kept (nearest neighbour) and still on their
    image (a bright cube labeled 1 holding a brighter core labeled 2)."""
    image = torch.zeros(1, 32, 32, 32)
    image[:, 8:20, 10:24, 6:18] = 1.0
    image[:, 12:16, 14:20, 10:14] = 2.0
    patch = {"image": image.clone(), "target": image.to(dtype)}
    assert spatial_augmentation(0.0) == []
    (affine,) = spatial_augmentation(1.0)
    affine.set_random_state(seed=0)
    moved = affine(patch)
    assert moved["image"].shape == moved["target"].shape == (1, 32, 32, 32)
    assert set(torch.unique(moved["target"]).tolist()) == {0, 1, 2} and not torch.equal(moved["target"].float(), image)
    for value in (0, 1, 2):
        assert abs(float(moved["image"][moved["target"] == value].mean()) - value) < 0.25  # bilinear blurs the edges


def _segment(model: Path, case: dict, output: Path, *extra: object) -> sitk.Image:
    rc, _, err = run("segment", "--model", model, "--input", case["mr"], "--output", output, *extra)
    assert rc == EXIT_OK, err
    return sitk.ReadImage(str(output))


@pytest.mark.parametrize("name", ["seg.nii.gz", "seg.nrrd"])
def test_segment_on_the_exact_input_grid(name: str, model: Path, case, tmp_path: Path) -> None:
    image = _segment(model, case, tmp_path / name)
    same_grid(image, sitk.ReadImage(case["mr"]))
    assert image.GetNumberOfComponentsPerPixel() == 1
    assert set(np.unique(sitk.GetArrayFromImage(image)).tolist()) <= {0, 1, 2}


def test_seg_nrrd_names_segments_like_model_json(model: Path, case, tmp_path: Path) -> None:
    image = _segment(model, case, tmp_path / "seg.seg.nrrd")
    same_grid(image, sitk.ReadImage(case["mr"]))
    labels = meta_of(model)["labels"]
    for i, label in enumerate(labels):
        assert image.GetMetaData(f"Segment{i}_Name") == label["name"]
        assert int(image.GetMetaData(f"Segment{i}_LabelValue")) == label["value"]
        color = [float(c) for c in image.GetMetaData(f"Segment{i}_Color").split()]
        np.testing.assert_allclose(color, label["color"], atol=1e-4)
    assert not image.HasMetaDataKey(f"Segment{len(labels)}_Name")
    assert set(np.unique(sitk.GetArrayFromImage(image)).tolist()) <= {0} | {l["value"] for l in labels}


def test_probabilities_one_component_per_output(model: Path, case, tmp_path: Path) -> None:
    label = sitk.GetArrayFromImage(_segment(model, case, tmp_path / "seg.nii.gz", "--probabilities", tmp_path / "p.nii.gz"))
    probs_image = sitk.ReadImage(str(tmp_path / "p.nii.gz"))
    same_grid(probs_image, sitk.ReadImage(case["mr"]))
    assert probs_image.GetNumberOfComponentsPerPixel() == meta_of(model)["architecture"]["out_channels"] == 3
    probs = sitk.GetArrayFromImage(probs_image)  # (Z, Y, X, K)
    assert np.isfinite(probs).all() and probs.min() >= 0.0 and probs.max() <= 1.0
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)  # softmax over background + classes
    np.testing.assert_array_equal(label, np.array([0, 1, 2])[probs.argmax(-1)])  # no post-processing by default


def test_tta_is_the_mean_of_the_flipped_predictions(model: Path, case, tmp_path: Path) -> None:
    """``--tta`` probabilities equal the mean of four plain runs, on the case and on copies flipped along each
    axis (each flipped back), computed here through the command line, apart from the TTA code."""
    tta_label = _segment(model, case, tmp_path / "tta.nii.gz", "--tta", "--probabilities", tmp_path / "tta.p.nii.gz")
    same_grid(tta_label, sitk.ReadImage(case["mr"]))
    tta = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "tta.p.nii.gz")))  # (Z, Y, X, K)
    original = sitk.ReadImage(case["mr"])
    runs = []
    for axis in (None, 0, 1, 2):
        array = sitk.GetArrayFromImage(original)
        flipped = sitk.GetImageFromArray(np.ascontiguousarray(array if axis is None else np.flip(array, axis)))
        flipped.CopyInformation(original)
        sitk.WriteImage(flipped, str(tmp_path / f"flip{axis}.nii.gz"))
        _segment(model, {"mr": tmp_path / f"flip{axis}.nii.gz"}, tmp_path / f"seg{axis}.nii.gz",
                 "--probabilities", tmp_path / f"p{axis}.nii.gz")
        probs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"p{axis}.nii.gz")))
        runs.append(probs if axis is None else np.flip(probs, axis))
    np.testing.assert_allclose(tta, np.mean(runs, axis=0), rtol=0, atol=1e-5)
    assert np.abs(tta - runs[0]).max() > 1e-3  # the flips change the prediction, so the comparison can fail
    np.testing.assert_array_equal(sitk.GetArrayFromImage(tta_label), np.array([0, 1, 2])[tta.argmax(-1)])


def test_roi_segments_only_inside_the_box(model: Path, case, tmp_path: Path) -> None:
    reference = sitk.ReadImage(case["mr"])
    low, high = (20.3, 25.2, 10.4), (60.7, 70.6, 30.3)  # continuous index (x, y, z), off the voxel centres
    corners = np.array([reference.TransformContinuousIndexToPhysicalPoint((x, y, z))
                        for x in (low[0], high[0]) for y in (low[1], high[1]) for z in (low[2], high[2])])
    box = [*corners.min(0), *corners.max(0)]  # physical LPS mm (the direction flips y)
    label = sitk.GetArrayFromImage(_segment(model, case, tmp_path / "seg.nii.gz", "--roi", *box,
                                            "--probabilities", tmp_path / "p.nii.gz"))
    probs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.nii.gz")))
    inside = np.zeros(label.shape, dtype=bool)  # voxels whose centres lie in the box
    inside[math.ceil(low[2]): math.floor(high[2]) + 1, math.ceil(low[1]): math.floor(high[1]) + 1,
           math.ceil(low[0]): math.floor(high[0]) + 1] = True
    assert not label[~inside].any()
    assert not probs[~inside].any()
    np.testing.assert_allclose(probs[inside].sum(-1), 1.0, atol=1e-4)  # the whole box was segmented


# ---------------------------------------------------------------- 3. evaluate


def _evaluate(tmp_path: Path, pred: object, ref: object, *extra: object) -> tuple[dict, str]:
    j, c = tmp_path / "metrics.json", tmp_path / "metrics.csv"
    rc, _, err = run("evaluate", "--pred", pred, "--ref", ref, "--json", j, "--csv", c, *extra)
    assert rc == EXIT_OK, err
    return _strict_json(j.read_text()), c.read_text()


def test_evaluate_identical_maps(cases, tmp_path: Path) -> None:
    report, csv_text = _evaluate(tmp_path, cases[0]["label"], cases[0]["label"])
    rows = report["labels"]
    assert [r["name"] for r in rows] == ["label 1", "label 2"]
    for row in rows:
        assert row["dice"] == 1.0 and row["hd95_mm"] == 0.0 and row["surface_dice"] == 1.0
        assert row["pred_ml"] == row["ref_ml"] > 0 and not row["empty_pred"] and not row["empty_ref"]
    lines = csv_text.strip().splitlines()
    assert len(lines) == 3 and "dice" in lines[0].split(",") and "hd95_mm" in lines[0].split(",")


def test_evaluate_empty_prediction_has_no_nan(cases, tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    write_image(empty, np.zeros(phantom.SHAPE_ZYX, dtype=np.int16), phantom.geometry())
    report, csv_text = _evaluate(tmp_path, empty, cases[0]["label"])
    assert [r["name"] for r in report["labels"]] == ["label 1", "label 2"]
    for row in report["labels"]:
        assert row["dice"] == 0.0 and row["surface_dice"] == 0.0
        assert row["hd95_mm"] is None and row["empty_pred"] is True and row["empty_ref"] is False
        assert row["pred_ml"] == 0.0
    assert "nan" not in csv_text.lower() and "inf" not in csv_text.lower()


def test_evaluate_brats_regions(cases, tmp_path: Path) -> None:
    ref = sitk.GetArrayFromImage(sitk.ReadImage(cases[0]["label"]))
    rim_only = tmp_path / "rim.nii.gz"
    write_image(rim_only, np.where(ref == 2, 0, ref).astype(np.int16), phantom.geometry())
    report, _ = _evaluate(tmp_path, rim_only, cases[0]["label"], "--label-scheme", "brats")
    rows = {r["name"]: r for r in report["labels"]}
    assert list(rows) == ["whole tumor", "tumor core", "enhancing tumor"]
    assert 0.0 < rows["whole tumor"]["dice"] < 1.0  # the core (2) is missing from the whole tumor
    assert rows["tumor core"]["dice"] == 1.0  # {1, 3, 4}: the rim alone, in both
    enhancing = rows["enhancing tumor"]  # {4}: empty in both
    assert enhancing["dice"] == 1.0 and enhancing["hd95_mm"] == 0.0 and enhancing["empty_pred"] and enhancing["empty_ref"]


def test_evaluate_pred_on_another_grid(cases, tmp_path: Path, capsys) -> None:
    g = phantom.geometry()
    moved = tmp_path / "moved.nii.gz"
    write_image(moved, sitk.GetArrayFromImage(sitk.ReadImage(cases[0]["label"])),
                Geometry(g.size, g.spacing, (g.origin[0] + 10.0, *g.origin[1:]), g.direction))
    rc, err = run_cli(capsys, ["evaluate", "--pred", str(moved), "--ref", cases[0]["label"], "--json", str(tmp_path / "m.json")])
    assert_bad(rc, err, str(moved), "different grid")
    assert not (tmp_path / "m.json").exists()


# ---------------------------------------------------------------- 4. bad input


def _finetune_bad(capsys, tmp_path: Path, images: list[str], labels: list[str], *extra: object) -> str:
    """Run a finetune expected to fail; returns stderr after checking the exit code and that no --out exists."""
    out = tmp_path / "model"
    rc, err = run_cli(capsys, ["finetune", "--init", "scratch", "--images", *images, "--labels", *labels,
                            "--out", out, "--preset", "tiny", "--steps", "2", "--modalities", "mr", *extra])
    assert rc == EXIT_BAD_INPUT, err
    assert not out.exists()
    return err


def _segment_bad(capsys, tmp_path: Path, model: Path, inputs: list[str], *extra: object) -> str:
    output = tmp_path / "seg.nii.gz"
    rc, err = run_cli(capsys, ["segment", "--model", model, "--input", *inputs, "--output", output, *extra])
    assert rc == EXIT_BAD_INPUT, err
    assert not output.exists()
    return err


def test_segment_channel_count_must_match_the_model(model: Path, case, tmp_path: Path, capsys) -> None:
    err = _segment_bad(capsys, tmp_path, model, [case["mr"], case["ct"]])
    assert_bad(EXIT_BAD_INPUT, err, "--input", f"2 file(s) given ({case['mr']}, {case['ct']})",
               f"the model {model} wants 1, one per modality: mr")


def test_finetune_label_values_the_model_does_not_know(cases, tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"labels": {"mode": "classes", "names": ["tumor"], "values": [[1]], "paint": [1],
                                             "colors": [[0.9, 0.3, 0.2]]}}))
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"]], [cases[0]["label"]], "--config", config)
    assert_bad(EXIT_BAD_INPUT, err, cases[0]["label"], "label value(s) [2]", "does not know")


def test_finetune_image_and_label_on_different_grids(cases, tmp_path: Path, capsys) -> None:
    g = phantom.geometry()
    label = tmp_path / "label.nii.gz"
    write_image(label, sitk.GetArrayFromImage(sitk.ReadImage(cases[0]["label"])),
                Geometry(g.size, (2.0, 2.0, 3.0), g.origin, g.direction))
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"]], [str(label)])
    assert_bad(EXIT_BAD_INPUT, err, str(label), "different grid")


def test_finetune_label_count_must_match_images(cases, tmp_path: Path, capsys) -> None:
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"], cases[1]["mr"]], [cases[0]["label"]])
    assert_bad(EXIT_BAD_INPUT, err, "--labels", "1 label file(s) for 2 case(s)")


def test_finetune_unknown_label_scheme(cases, tmp_path: Path, capsys) -> None:
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"]], [cases[0]["label"]], "--label-scheme", "lobes")
    assert_bad(EXIT_BAD_INPUT, err, "--label-scheme", "unknown scheme 'lobes'")


def test_evaluate_unknown_label_scheme(cases, tmp_path: Path, capsys) -> None:
    rc, err = run_cli(capsys, ["evaluate", "--pred", cases[0]["label"], "--ref", cases[0]["label"], "--label-scheme", "lobes"])
    assert_bad(rc, err, "--label-scheme", "unknown scheme 'lobes'")


def test_missing_model_json(cases, case, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _segment_bad(capsys, tmp_path, empty, [case["mr"]])
    assert_bad(EXIT_BAD_INPUT, err, str(empty / "model.json"), "missing")
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"]], [cases[0]["label"]], "--init", empty)
    assert_bad(EXIT_BAD_INPUT, err, str(empty / "model.json"), "missing")


def test_init_from_an_architecture_this_version_does_not_build(pretrained: Path, cases, tmp_path: Path, capsys) -> None:
    old = _copy_model(pretrained, tmp_path / "old")
    meta = json.loads((old / "model.json").read_text(encoding="utf-8"))
    meta["architecture"].update(name="sar-unet3d", features=[4, 8, 8, 16, 16, 4])  # before the residual U-Net
    (old / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"]], [cases[0]["label"]], "--init", old)
    assert_bad(EXIT_BAD_INPUT, err, str(old / "model.json"), "'sar-unet3d'", "is not one this sarseg version builds")


def test_init_whose_encoder_does_not_fit(cases, tmp_path: Path, capsys) -> None:
    """A two-channel model's first convolution cannot start a one-channel fine-tuning: refused (exit 2,
    nothing written) unless --allow-partial-init; what was taken is reported on stderr either way."""
    card = ModelCard(kind="segmentation", architecture=Architecture("resunet3d", 2, 3, (8, 16, 32, 64, 128), 1, "instance"),
                     preset="tiny", normalisation={}, modalities=("mr", "ct"), patch_size=(32, 32, 16),
                     labels=LabelScheme.classes(["rim", "core"], [1, 2]), inference=InferenceConfig())
    two = save_model(tmp_path / "two", build_net(card).state_dict(), card)
    err = _finetune_bad(capsys, tmp_path, [cases[0]["mr"]], [cases[0]["label"]], "--init", two)
    assert_bad(EXIT_BAD_INPUT, err, str(two), "only 28 of the 30 encoder tensors fit", "--allow-partial-init")
    assert "copied 58 tensors, adapted 0, initialised 2 (encoder: 28 of 30 taken)" in err
    rc, err = run_cli(capsys, ["finetune", "--init", two, "--images", cases[0]["mr"], "--labels", cases[0]["label"],
                               "--out", tmp_path / "model", "--preset", "tiny", "--steps", "2", "--modalities", "mr",
                               "--allow-partial-init"])
    assert rc == EXIT_OK, err
    assert "initialised 2 (encoder: 28 of 30 taken)" in err


def test_malformed_model_json(model: Path, case, tmp_path: Path, capsys) -> None:
    broken = _copy_model(model, tmp_path / "broken")
    (broken / "model.json").write_text('{"format": "sar-model", "kind": ')
    err = _segment_bad(capsys, tmp_path, broken, [case["mr"]])
    assert_bad(EXIT_BAD_INPUT, err, str(broken / "model.json"), "malformed JSON")


def test_tampered_weights(model: Path, case, tmp_path: Path, capsys) -> None:
    tampered = _copy_model(model, tmp_path / "tampered")
    data = bytearray((tampered / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "weights.safetensors").write_bytes(bytes(data))
    err = _segment_bad(capsys, tmp_path, tampered, [case["mr"]])
    assert_bad(EXIT_BAD_INPUT, err, str(tampered / "weights.safetensors"), "SHA-256")


def test_pretrained_model_cannot_segment(pretrained: Path, case, tmp_path: Path, capsys) -> None:
    err = _segment_bad(capsys, tmp_path, pretrained, [case["mr"]])
    assert_bad(EXIT_BAD_INPUT, err, str(pretrained / "model.json"), "'pretrained'", "fine-tuned")


def test_roi_outside_the_image(model: Path, case, tmp_path: Path, capsys) -> None:
    err = _segment_bad(capsys, tmp_path, model, [case["mr"]], "--roi", 500, 500, 500, 600, 600, 600)
    assert_bad(EXIT_BAD_INPUT, err, "--roi", "outside the image")


# ---------------------------------------------------------------- 5. real scans


def test_real_case_segmented_on_its_own_grid(shared_data: Path, tmp_path: Path) -> None:
    """Fine-tune on TCGA-GBM brain1, segment brain2 (0.78x0.78x6.5 mm, y flipped): the output lies on
    brain2's grid. Quality does not matter here. NIfTI stores spacing and origin as float32, hence the
    1e-4 mm tolerance against the NRRD input's doubles."""
    gbm = shared_data / "tcga_gbm"
    out = tmp_path / "model"
    rc, _, err = run("finetune", "--init", "scratch", "--images", gbm / "brain1_image.nrrd",
                     "--labels", gbm / "brain1_label.nrrd", "--out", out, "--preset", "tiny", "--steps", "20",
                     "--modalities", "mr", "--label-scheme", "binary", "--progress", "json")
    assert rc == EXIT_OK, err
    assert meta_of(out)["provenance"]["data"]["validation"] == []  # one case: nothing held out
    seg = tmp_path / "brain2_seg.nii.gz"
    rc, _, err = run("segment", "--model", out, "--input", gbm / "brain2_image.nrrd", "--output", seg)
    assert rc == EXIT_OK, err
    image, reference = sitk.ReadImage(str(seg)), sitk.ReadImage(str(gbm / "brain2_image.nrrd"))
    assert reference.GetSize() == (256, 256, 23) and reference.GetDirection()[4] == -1.0
    same_grid(image, reference, tol=1e-4)
    assert set(np.unique(sitk.GetArrayFromImage(image)).tolist()) <= {0, 1}
