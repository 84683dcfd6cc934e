"""``sarseg pretrain`` on bad input: exit code 2, a message on stderr naming the file and the problem, and
nothing written (no ``--out`` folder afterwards; an existing one left untouched).

The real command line runs in-process (``sarseg.cli.main``); bad inputs fail before any training starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from sarseg.cli import EXIT_BAD_INPUT, EXIT_OK, main
from cli_helpers import assert_bad, run_cli

FAST = ["--preset", "tiny", "--steps", "2", "--workers", "0"]


def _smooth_volume(seed: int, shape=(40, 64, 64)) -> np.ndarray:
    """Smooth random noise in a CT-like range: a valid, non-constant volume."""
    noise = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    volume = gaussian_filter(noise, 3.0)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    return (volume * 1200.0 - 200.0).astype(np.float32)


def _write(path: Path, array: np.ndarray, spacing=(1.5, 1.5, 1.5)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def _write_nrrd(path: Path, array: np.ndarray, geometry_fields: str) -> Path:
    """A NRRD written by hand (SimpleITK refuses to write zero or negative spacing)."""
    z, y, x = array.shape
    header = (
        "NRRD0004\ntype: float\ndimension: 3\n"
        f"sizes: {x} {y} {z}\nendian: little\nencoding: raw\n{geometry_fields}\n\n"
    )
    path.write_bytes(header.encode("ascii") + array.astype("<f4").tobytes())
    return path


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("good")
    return (_write(folder / "good1.nii.gz", _smooth_volume(1)), _write(folder / "good2.nii.gz", _smooth_volume(2)))


# ---------------------------------------------------------------- bad volumes


def _unreadable(folder: Path) -> Path:
    path = folder / "random.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _truncated(suffix: str) -> Callable[[Path], Path]:
    """A valid file cut in half (ITK's NIfTI reader would fill the missing half with zeros)."""

    def build(folder: Path) -> Path:
        data = _write(folder / f"whole{suffix}", _smooth_volume(3)).read_bytes()
        path = folder / f"truncated{suffix}"
        path.write_bytes(data[: len(data) // 2])
        return path

    return build


def _two_d(folder: Path) -> Path:
    return _write(folder / "slice.nii.gz", _smooth_volume(4)[20])


def _with_value(value: float) -> Callable[[Path], Path]:
    """NRRD, not NIfTI: ITK's NIfTI reader (nifti1_io) silently turns non-finite floats into 0."""

    def build(folder: Path) -> Path:
        volume = _smooth_volume(5)
        volume[10:12, 30, 30:33] = value
        return _write(folder / f"bad_{str(value).lower()}.nrrd", volume)

    return build


def _constant(folder: Path) -> Path:
    return _write(folder / "constant.nii.gz", np.full((40, 64, 64), 100.0, np.float32))


def _nrrd(name: str, fields: str) -> Callable[[Path], Path]:
    return lambda folder: _write_nrrd(folder / name, _smooth_volume(6), fields)


def _too_small(folder: Path) -> Path:
    return _write(folder / "small.nii.gz", _smooth_volume(7, (8, 8, 8)), spacing=(1.0, 1.0, 1.0))


SPACE = "space: left-posterior-superior\nspace origin: (0,0,0)\n"

BAD_VOLUMES = [
    pytest.param(_unreadable, ("cannot read",), id="unreadable"),
    pytest.param(_truncated(".nii.gz"), ("truncated",), id="truncated-nii-gz"),
    pytest.param(_truncated(".nii"), ("truncated",), id="truncated-nii"),
    pytest.param(_truncated(".nrrd"), ("truncated",), id="truncated-nrrd"),
    pytest.param(_two_d, ("2D", "3D volume is needed"), id="2d"),
    pytest.param(_with_value(float("nan")), ("NaN",), id="nan"),
    pytest.param(_with_value(float("inf")), ("infinite",), id="inf"),
    pytest.param(_with_value(float("-inf")), ("infinite",), id="minus-inf"),
    pytest.param(_constant, ("constant",), id="constant"),
    pytest.param(_nrrd("zero_spacings.nrrd", "spacings: 1.5 0 1.5"), ("spacing",), id="zero-spacing-spacings"),
    pytest.param(_nrrd("zero_directions.nrrd", SPACE + "space directions: (1.5,0,0) (0,0,0) (0,0,1.5)"),
                 ("zero, negative or invalid voxel spacing",), id="zero-spacing-directions"),
    pytest.param(_nrrd("negative.nrrd", "spacings: 1.5 -1.5 1.5"),
                 ("zero, negative or invalid voxel spacing", "-1.5"), id="negative-spacing"),
    pytest.param(_too_small, ("too small for the smallest cube",), id="too-small"),
]


@pytest.mark.parametrize("build, problems", BAD_VOLUMES)
def test_bad_volume(build, problems, good, tmp_path: Path, capsys) -> None:
    bad = build(tmp_path)
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", f"ct={good[0]}", f"mr={bad}", "--out", str(out), *FAST])
    assert_bad(rc, err, str(bad), *problems)
    assert str(good[0]) not in err  # the message points at the bad volume, not its valid neighbour
    assert not out.exists()


def test_bad_volume_alone(tmp_path: Path, capsys) -> None:
    bad = _with_value(float("nan"))(tmp_path)
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", str(bad), "--out", str(out), *FAST])
    assert_bad(rc, err, str(bad), "NaN")
    assert not out.exists()


def test_flipped_nrrd_is_not_bad_spacing(tmp_path: Path) -> None:
    """A negative 'space directions' vector is a flipped axis, not a negative spacing: it must pass."""
    from sarseg.io import read_image

    path = _nrrd("flipped.nrrd", SPACE + "space directions: (1.5,0,0) (0,-1.5,0) (0,0,1.5)")(tmp_path)
    image = read_image([path])
    np.testing.assert_allclose(image.geometry.spacing, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(image.geometry.direction, (1, 0, 0, 0, -1, 0, 0, 0, 1))


# ---------------------------------------------------------------- bad paths, options and configs


def test_empty_glob(tmp_path: Path, capsys) -> None:
    pattern = str(tmp_path / "nothing*.nii.gz")
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", f"ct={pattern}", "--out", str(out), *FAST])
    assert_bad(rc, err, pattern, "matches no image files")
    assert not out.exists()


def test_nonexistent_path(good, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.nii.gz"
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", f"ct={good[0]}", f"mr={missing}", "--out", str(out), *FAST])
    assert_bad(rc, err, str(missing), "no such file")
    assert not out.exists()


def test_existing_out_without_resume_is_untouched(good, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("keep me")
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in out.rglob("*")}
    rc, err = run_cli(capsys, ["pretrain", "--data", str(good[0]), "--out", str(out), *FAST])
    assert_bad(rc, err, str(out), "not empty", "--resume")
    after = {p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns) for p in out.rglob("*")}
    assert after == before


def test_resume_without_checkpoint(good, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", str(good[0]), "--out", str(out), "--resume", *FAST])
    assert_bad(rc, err, str(out / "checkpoint.pt"), "no checkpoint")
    assert not out.exists()


def test_resume_into_empty_folder_without_checkpoint(good, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rc, err = run_cli(capsys, ["pretrain", "--data", str(good[0]), "--out", str(out), "--resume", *FAST])
    assert_bad(rc, err, str(out / "checkpoint.pt"), "no checkpoint")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_non_positive_steps(steps: str, good, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["pretrain", "--data", str(good[0]), "--out", str(out), "--preset", "tiny", "--steps", steps, "--workers", "0"]
    rc, err = run_cli(capsys, argv)
    assert_bad(rc, err, "--steps", "must be positive")
    assert not out.exists()


def test_unknown_preset(good, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["pretrain", "--data", str(good[0]), "--out", str(out), "--preset", "huge", "--steps", "2", "--workers", "0"]
    rc, err = run_cli(capsys, argv)
    assert_bad(rc, err, "--preset", "unknown preset 'huge'", "tiny")
    assert not out.exists()


@pytest.mark.parametrize(
    "text, problems",
    [
        pytest.param('{"steps": 2,', ("not valid JSON",), id="invalid-json"),
        pytest.param("[1, 2]", ("JSON object",), id="not-an-object"),
        pytest.param('{"steps": 2, "bogus_setting": 1}', ("unknown setting", "bogus_setting"), id="unknown-key"),
        pytest.param('{"proxy": {"bogus_rate": 0.5}}', ("unknown setting", "bogus_rate"), id="unknown-nested-key"),
        pytest.param('{"proxy": {"flip_rate": 1.5}}', ("flip_rate",), id="invalid-value"),
    ],
)
def test_bad_config_file(text: str, problems: tuple[str, ...], good, tmp_path: Path, capsys) -> None:
    config = tmp_path / "settings.json"
    config.write_text(text)
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", str(good[0]), "--out", str(out), "--config", str(config), *FAST])
    assert_bad(rc, err, str(config), *problems)
    assert not out.exists()


def test_missing_config_file(good, tmp_path: Path, capsys) -> None:
    config = tmp_path / "absent.json"
    out = tmp_path / "out"
    rc, err = run_cli(capsys, ["pretrain", "--data", str(good[0]), "--out", str(out), "--config", str(config), *FAST])
    assert_bad(rc, err, str(config), "no such config file")
    assert not out.exists()


# ---------------------------------------------------------------- the happy path, for contrast


def test_two_sources_happy_path(good, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model"
    rc, err = run_cli(capsys, ["pretrain", "--data", f"ct={good[0]}", f"mr={good[1]}", "--out", str(out), *FAST])
    assert rc == EXIT_OK, err
    assert "error" not in err
    for name in ("model.json", "weights.safetensors", "checkpoint.pt", "log.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    meta = json.loads((out / "model.json").read_text())
    assert meta["sources"] == ["ct", "mr"]
    assert meta["provenance"]["steps"] == 2
    assert meta["provenance"]["data"] == {"ct": [str(good[0])], "mr": [str(good[1])]}
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]


# -- outputs checked before any work; all outputs or none (hostile-input issue, class 7) --------------

def test_segment_checks_every_output_before_working(tmp_path, capsys) -> None:
    from test_model import saved, segmentation_card

    from sarseg import phantom
    from sarseg.io import write_image

    model = saved(tmp_path / "model", segmentation_card())[0]
    images, _ = phantom.make_case(3, (16, 32, 32))
    image = write_image(tmp_path / "mr.nii.gz", images["mr"], phantom.geometry((16, 32, 32)))
    base = ["segment", "--model", model, "--input", image, "--device", "cpu"]
    (tmp_path / "folder.nii.gz").mkdir()
    for output, probabilities, names, problem in [
        (tmp_path / "out.nii.gz", tmp_path / "probs.png", "probs.png", "unknown file type"),
        (tmp_path / "out.nii.gz", tmp_path / "folder.nii.gz", "folder.nii.gz", "is a folder"),
        (tmp_path / "out.nii.gz", tmp_path / "out.nii.gz", "--probabilities", "same file as --output"),
        (tmp_path / "out.txt", tmp_path / "probs.nii.gz", "out.txt", "unknown file type"),
    ]:
        rc, err = run_cli(capsys, [*base, "--output", output, "--probabilities", probabilities])
        assert_bad(rc, err, names, problem)
        assert not output.exists() and not (tmp_path / "probs.nii.gz").exists()
    rc, err = run_cli(capsys, [*base, "--output", tmp_path / "out.nii.gz", "--probabilities", tmp_path / "probs.nii.gz"])
    assert rc == 0 and (tmp_path / "out.nii.gz").is_file() and (tmp_path / "probs.nii.gz").is_file(), err


def test_evaluate_checks_tolerance_and_outputs_before_working(tmp_path, capsys) -> None:
    from sarseg import phantom
    from sarseg.io import write_image

    _, label = phantom.make_case(3, (16, 32, 32))
    ref = write_image(tmp_path / "ref.nii.gz", (label > 0).astype(np.int16), phantom.geometry((16, 32, 32)))
    base = ["evaluate", "--pred", ref, "--ref", ref]
    rc, err = run_cli(capsys, [*base, "--tolerance", "-1"])
    assert_bad(rc, err, "--tolerance", "positive")
    (tmp_path / "folder").mkdir()
    rc, err = run_cli(capsys, [*base, "--json", tmp_path / "r.json", "--csv", tmp_path / "folder"])
    assert_bad(rc, err, "folder", "is a folder")
    assert not (tmp_path / "r.json").exists()
    rc, err = run_cli(capsys, [*base, "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv"])
    assert rc == 0 and json.loads((tmp_path / "r.json").read_text())["labels"][0]["dice"] == 1.0
    assert (tmp_path / "r.csv").read_text().startswith("name,")
