"""``sarseg finetune --promptable`` and ``sarseg segment`` with prompts, end to end on phantoms with the tiny
preset: the promptable model's card, its start from a SAR model (guidance inputs at zero), validation
by simulated clicks, resuming and continuing, clicks and Slicer markups on the command line, and bad
prompts (exit 2, a message naming the option or file and the problem, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sarseg import phantom
from sarseg.cli import EXIT_OK
from sarseg.interactive import with_guidance_inputs
from sarseg.core.card import read_card
from sarseg.model import load_model
from sarseg.nets import UNet3D
from sarseg.config import NetConfig
from cli_helpers import assert_bad, run_cli
from test_finetune import events, meta_of, run
from test_model import pretrained_card, saved, segmentation_card

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"features": (8, 16, 32, 64, 128), "res_units": 1}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> list[dict[str, str]]:
    return phantom.write_cases(tmp_path_factory.mktemp("phantoms"), 4)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A SAR model folder (random weights: what is taken from it is checked, not what it learned)."""
    return saved(tmp_path_factory.mktemp("pre") / "sar", pretrained_card())[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cases, pretrained) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("click")
    config = folder / "config.json"
    config.write_text(json.dumps({"val_every": 3, "checkpoint_every": 3}))
    out = folder / "model"
    rc, stdout, err = run("finetune", "--init", pretrained, "--images", *[c["mr"] for c in cases],
                          "--labels", *[c["label"] for c in cases], "--out", out, "--preset", "tiny", "--steps", "6",
                          "--modalities", "mr", "--promptable", "--config", config, "--progress", "json")
    assert rc == EXIT_OK, err
    return out, events(stdout)


@pytest.fixture(scope="module")
def model(trained) -> Path:
    return trained[0]


def centre_point(case: dict[str, str]) -> str:
    """The LPS point (X,Y,Z text) of the voxel deepest inside the case's lesion."""
    from sarseg.clicks import click_in, largest_component

    label = sitk.ReadImage(case["label"])
    z, y, x = click_in(largest_component(sitk.GetArrayFromImage(label) > 0))
    return ",".join(f"{v:.3f}" for v in label.TransformIndexToPhysicalPoint((x, y, z)))


# ------------------------------------------------------------------------------------ training


def test_a_promptable_card(trained, pretrained) -> None:
    out, log = trained
    meta = meta_of(out)
    assert meta["prompts"] == {"channels": ["positive", "negative", "box"], "sigma": 2.0}
    assert meta["in_channels"] == meta["architecture"]["in_channels"] == 4 and meta["modalities"] == ["mr"]
    assert meta["label_mode"] == "regions" and [l["name"] for l in meta["labels"]] == ["tumor"]
    assert meta["architecture"]["out_channels"] == 1
    assert meta["provenance"]["config"]["prompts"] == meta["prompts"]
    start = next(e for e in log if e["event"] == "start")
    assert start["prompts"] == meta["prompts"] and start["transfer"]["copied"] > 0
    validations = [e for e in log if e["event"] == "validation"]
    assert [e["step"] for e in validations] == [3, 6]
    for event in validations:  # Dice after 1, 2 and 3 simulated clicks; the model is chosen after 3
        assert len(event["dice_per_click"]) == 3 and event["dice"] == event["dice_per_click"][-1]
    best = meta["provenance"]["best"]
    assert best["dice"] == max(e["dice"] for e in validations) and best["dice_per_click"][-1] == best["dice"]
    card, _ = load_model(out)
    assert card.promptable
    rc, listed, err = run("models", "list", "--json", "--root", out.parent)
    assert rc == EXIT_OK and [m["promptable"] for m in json.loads(listed) if m["name"] == out.name] == [True], err
    rc, shown, err = run("models", "show", out.name, "--root", out.parent)
    assert rc == EXIT_OK and "promptable: positive, negative, box" in shown, err


def test_guidance_inputs_start_at_zero(pretrained) -> None:
    _, state = load_model(pretrained)
    own = UNet3D(4, 1, NetConfig(**TINY)).state_dict()
    widened = with_guidance_inputs(state, own, "backbone.", 1)
    for key in ("encoder.0.conv.unit0.conv.weight", "encoder.0.residual.weight"):
        source, new = state[f"backbone.{key}"], widened[f"backbone.{key}"]
        assert new.shape == own[key].shape and torch.equal(new[:, :1], source) and not new[:, 1:].any()
    two = with_guidance_inputs(state, UNet3D(5, 1, NetConfig(**TINY)).state_dict(), "backbone.", 2)
    first = two["backbone.encoder.0.conv.unit0.conv.weight"]
    source = state["backbone.encoder.0.conv.unit0.conv.weight"]
    assert torch.allclose(first[:, 0], source[:, 0] / 2) and torch.allclose(first[:, 1], source[:, 0] / 2)
    assert not first[:, 2:].any()
    assert torch.equal(widened["backbone.encoder.1.conv.unit0.conv.weight"], state["backbone.encoder.1.conv.unit0.conv.weight"])


def test_resume_and_continue_from_a_promptable_model(model: Path, cases, tmp_path: Path) -> None:
    resumed = shutil.copytree(model, tmp_path / "resumed")
    rc, stdout, err = run("finetune", "--init", "scratch", "--out", resumed, "--resume", "--promptable", "--steps", "7",
                          "--progress", "json")
    assert rc == EXIT_OK, err
    assert meta_of(resumed)["prompts"] == meta_of(model)["prompts"] and events(stdout)[-1]["step"] == 7
    rc, _, err = run("finetune", "--init", "scratch", "--out", resumed, "--resume", "--steps", "8")
    assert rc == 2 and "holds a promptable model's training: resume it with --promptable" in err
    again = tmp_path / "again"  # a promptable model as --init: everything taken as it is
    rc, stdout, err = run("finetune", "--init", model, "--images", cases[0]["mr"], cases[1]["mr"], "--labels",
                          cases[0]["label"], cases[1]["label"], "--out", again, "--preset", "tiny", "--steps", "2",
                          "--modalities", "mr", "--promptable", "--progress", "json")
    assert rc == EXIT_OK, err
    start = next(e for e in events(stdout) if e["event"] == "start")
    assert start["transfer"]["initialised"] == 0 and start["transfer"]["adapted"] == 0
    assert meta_of(again)["provenance"]["init"]["kind"] == "segmentation"


# ------------------------------------------------------------------------------------ segment with prompts


def test_segment_from_a_click_runs_one_patch_around_it(model: Path, cases, tmp_path: Path) -> None:
    case = cases[3]
    output = tmp_path / "seg.seg.nrrd"
    rc, _, err = run("segment", "--model", model, "--input", case["mr"], "--output", output, "--points", centre_point(case),
                     "--probabilities", tmp_path / "p.nii.gz")
    assert rc == EXIT_OK, err
    image, reference = sitk.ReadImage(str(output)), sitk.ReadImage(case["mr"])
    assert image.GetSize() == reference.GetSize() and image.GetOrigin() == reference.GetOrigin()
    assert image.GetMetaData("Segment0_Name") == "tumor"
    probs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.nii.gz")))
    touched = np.argwhere(probs > 0)
    patch_zyx = read_card(model).patch_size[::-1]
    assert np.all(touched.max(0) - touched.min(0) < patch_zyx)  # one patch around the click


def test_markups_in_ras_give_what_the_same_points_give(model: Path, cases, tmp_path: Path) -> None:
    case = cases[3]
    point = [float(v) for v in centre_point(case).split(",")]
    negative = [point[0] + 12.0, point[1], point[2]]
    rc, _, err = run("segment", "--model", model, "--input", case["mr"], "--output", tmp_path / "a.nii.gz",
                     "--points", ",".join(map(str, point)), "--negative-points", ",".join(map(str, negative)))
    assert rc == EXIT_OK, err
    (tmp_path / "pos.mrk.json").write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "RAS",
                                                                    "controlPoints": [{"position": [-point[0], -point[1], point[2]]}]}]}))
    (tmp_path / "neg.mrk.json").write_text(json.dumps({"markups": [{"type": "Fiducial", "coordinateSystem": "LPS",
                                                                    "controlPoints": [{"position": negative}]}]}))
    rc, _, err = run("segment", "--model", model, "--input", case["mr"], "--output", tmp_path / "b.nii.gz",
                     "--prompts", tmp_path / "pos.mrk.json", "--negative-prompts", tmp_path / "neg.mrk.json")
    assert rc == EXIT_OK, err
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{n}.nii.gz"))) for n in "ab")
    np.testing.assert_array_equal(a, b)


def test_a_box_from_an_roi(model: Path, cases, tmp_path: Path) -> None:
    case = cases[3]
    label = sitk.ReadImage(case["label"])
    found = np.argwhere(sitk.GetArrayFromImage(label) > 0)
    corners = np.array([label.TransformIndexToPhysicalPoint([int(v) for v in c[::-1]]) for c in (found.min(0), found.max(0))])
    box = [*corners.min(0), *corners.max(0)]
    rc, _, err = run("segment", "--model", model, "--input", case["mr"], "--output", tmp_path / "roi.nii.gz",
                     "--roi", *box, "--probabilities", tmp_path / "p.nii.gz")
    assert rc == EXIT_OK, err
    probs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "p.nii.gz")))
    touched = np.argwhere(probs > 0)
    assert np.all(touched.min(0) <= found.min(0)) and np.all(touched.max(0) >= found.max(0))  # the crop holds the box


def test_bad_prompts(model: Path, cases, tmp_path: Path, capsys) -> None:
    case = cases[3]
    output = tmp_path / "seg.nii.gz"
    base = ["segment", "--model", model, "--input", case["mr"], "--output", output]
    rc, err = run_cli(capsys, base)
    assert_bad(rc, err, str(model), "is a promptable model", "--points")
    rc, err = run_cli(capsys, [*base, "--negative-points", centre_point(case)])
    assert_bad(rc, err, str(model), "negative clicks alone")
    rc, err = run_cli(capsys, [*base, "--points", centre_point(case), "-500,0,0"])
    assert_bad(rc, err, "--points -500,0,0", "point (-500, 0, 0) (LPS mm) lies outside the image",
               "x -72.75..71.25, y -71.25..72.75, z -71.5..72.5 mm")
    rc, err = run_cli(capsys, [*base, "--points", "1,2"])
    assert_bad(rc, err, "--points 1,2", "is not a point X,Y,Z")
    bad = tmp_path / "bad.mrk.json"
    bad.write_text('{"markups": [{"type": "Line", "controlPoints": []}]}')
    rc, err = run_cli(capsys, [*base, "--prompts", bad])
    assert_bad(rc, err, str(bad), "prompts are point lists (Fiducial) and ROIs")
    roi = tmp_path / "roi.mrk.json"
    roi.write_text('{"markups": [{"type": "ROI", "center": [0, 0, 0], "size": [10, 10, 10]}]}')
    rc, err = run_cli(capsys, [*base, "--points", centre_point(case), "--negative-prompts", roi])
    assert_bad(rc, err, str(roi), "a box is a positive prompt")
    rc, err = run_cli(capsys, [*base, "--prompts", roi, "--roi", "0", "0", "0", "5", "5", "5"])
    assert_bad(rc, err, "prompts", "two boxes")
    assert not output.exists()


def test_a_fixed_model_takes_no_prompts(tmp_path: Path, cases, capsys) -> None:
    fixed = saved(tmp_path / "fixed", segmentation_card())[0]
    output = tmp_path / "seg.nii.gz"
    rc, err = run_cli(capsys, ["segment", "--model", fixed, "--input", cases[0]["mr"], "--output", output,
                               "--points", "0,0,0"])
    assert_bad(rc, err, str(fixed), "is not a promptable model")
    assert not output.exists()
