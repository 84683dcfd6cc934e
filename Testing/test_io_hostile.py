"""sarseg.io against hostile files: what ITK hides in NIfTI (NaN/Inf, pixdim 0), headers that claim more
voxels than the file could hold, full and read-only disks, and random header mutations (fuzz)."""

from __future__ import annotations

import contextlib
import gzip
import random
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarseg import io
from sarseg.core.errors import BadInput

GEOMETRY = io.Geometry((6, 5, 4), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def volume(dtype=np.float32) -> np.ndarray:
    return np.arange(120, dtype=dtype).reshape(4, 5, 6)


def write_nifti(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(io.to_sitk(array, GEOMETRY), str(path), useCompression=path.name.endswith(".gz"))
    return path


def patch_nifti(path: Path, offset: int, fmt: str, *values) -> None:
    """Change header bytes of a .nii or .nii.gz file in place."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())
    struct.pack_into(fmt, data, offset, *values)
    with opener(path, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nifti_nan_and_inf_voxels_are_refused(tmp_path: Path, suffix: str, bad: float) -> None:
    array = volume()
    array[2, 3, 4] = bad
    path = write_nifti(tmp_path / f"scan{suffix}", array)
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # what ITK alone shows
    with pytest.raises(BadInput, match="1 NaN or infinite voxels") as exc:
        io.read_image([path])
    assert exc.value.what == str(path)


def test_nifti_float64_nan_is_refused_and_integers_are_not_scanned(tmp_path: Path) -> None:
    array = volume(np.float64)
    array[0, 0, 0] = np.nan
    with pytest.raises(BadInput, match="NaN or infinite"):
        io.read_image([write_nifti(tmp_path / "scan.nii.gz", array)])
    clean = io.read_image([write_nifti(tmp_path / "ints.nii.gz", volume(np.int16))])
    assert np.array_equal(clean.array[0], volume(np.float32))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("pixdim", [0.0, -1.0, float("nan")])
def test_nifti_zero_or_invalid_pixdim_is_refused(tmp_path: Path, suffix: str, pixdim: float) -> None:
    path = write_nifti(tmp_path / f"scan{suffix}", volume())
    patch_nifti(path, 76 + 4 * 2, "<f", pixdim)  # pixdim[2]: the y spacing
    if pixdim == 0.0:
        assert sitk.ReadImage(str(path)).GetSpacing()[1] == 1.0  # ITK makes it 1 mm
    with pytest.raises(BadInput, match="spacing"):
        io.read_image([path])


def test_a_tiny_nrrd_declaring_gigavoxels_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.nrrd"
    header = "NRRD0004\ntype: float\ndimension: 3\nsizes: 1200 1200 1200\nspacings: 1 1 1\nencoding: gzip\nendian: little\n\n"
    path.write_bytes(header.encode() + gzip.compress(b"\0" * 1000))
    with pytest.raises(BadInput, match="declares 1,728,000,000 voxels") as exc:
        io.read_image([path])
    assert exc.value.what == str(path)


def test_the_voxel_limit_is_configurable(tmp_path: Path, monkeypatch) -> None:
    path = write_nifti(tmp_path / "scan.nii.gz", volume())
    monkeypatch.setattr(io, "MAX_VOXELS", 100)
    with pytest.raises(BadInput, match="more than the limit of 100 .*SARSEG_MAX_VOXELS"):
        io.read_image([path])
    monkeypatch.setattr(io, "MAX_VOXELS", 120)
    assert io.read_image([path]).array.shape == (1, 4, 5, 6)


@contextlib.contextmanager
def mounted(folder: Path, options: str):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root) to fill a disk")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("name", ["tumor.nii.gz", "tumor.nii", "tumor.nrrd", "tumor.seg.nrrd"])
def test_a_full_disk_leaves_no_file_and_says_so(tmp_path: Path, name: str) -> None:
    noise = np.random.default_rng(0).integers(0, 30000, size=(40, 64, 64)).astype(np.int16)  # 320 KB, incompressible
    geometry = io.Geometry((64, 64, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with mounted(tmp_path / "disk", "size=96k") as disk:
        with pytest.raises(BadInput) as exc:
            if name.endswith(".seg.nrrd"):
                io.write_segmentation(disk / name, noise, geometry, [{"name": "t", "value": 1, "color": (1, 0, 0)}])
            else:
                io.write_image(disk / name, noise, geometry)
        assert exc.value.what == str(disk / name) and "nothing was kept" in str(exc.value)
        assert list(disk.iterdir()) == []  # neither the file nor a temporary


def test_a_read_only_disk_is_refused_before_any_work(tmp_path: Path) -> None:
    with mounted(tmp_path / "ro", "size=64k,ro") as disk:
        with pytest.raises(BadInput, match="is not writable"):
            io.check_output_path(disk / "tumor.nii.gz")


@pytest.mark.parametrize("name, problem", [("tumor.png", "unknown file type"), ("folder.nii.gz", "is a folder")])
def test_outputs_that_cannot_be_written_are_named(tmp_path: Path, name: str, problem: str) -> None:
    (tmp_path / "folder.nii.gz").mkdir()
    with pytest.raises(BadInput, match=problem) as exc:
        io.check_output_path(tmp_path / name, "--output")
    assert exc.value.what == str(tmp_path / name)


# -- fuzz: random header mutations never give anything but an image or BadInput --------------------

def _mutate_binary(data: bytes, rng: random.Random, header_bytes: int) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(header_bytes)
        choice = rng.random()
        if choice < 0.4:
            data[at] = rng.randrange(256)
        elif choice < 0.8 and at + 4 <= header_bytes:  # a plausible-looking number in a 4-byte field
            value = rng.choice([0, -1, 1, 2**15 - 1, 2**31 - 1, 10**6, 7, 3])
            data[at:at + 4] = struct.pack("<i", value)
        else:
            data[at:at + 4] = struct.pack("<f", rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30]))
    return bytes(data)


def _mutate_text(header: str, rng: random.Random) -> str:
    lines = header.split("\n")
    index = rng.randrange(1, len(lines) - 2)
    key, _, value = lines[index].partition(": ")
    replacement = rng.choice(["0", "-1", "nan", "1e9", "100000 100000 100000", "2", "a b c", "", "1 1", "float",
                              "raw", "gzip", "(1,0,0) (0,0,0) (0,0,1)", "4000000000 1 1"])
    lines[index] = f"{key}: {replacement}" if rng.random() < 0.8 else f"{replacement}: {value}"
    return "\n".join(lines)


def _assert_image_or_bad_input(path: Path) -> None:
    try:
        image = io.read_image([path])
    except BadInput:
        return
    assert np.isfinite(image.array).all() and all(s > 0 for s in image.geometry.spacing)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_fuzz_nifti_headers(tmp_path: Path, suffix: str) -> None:
    source = write_nifti(tmp_path / f"source{suffix}", volume())
    raw = gzip.decompress(source.read_bytes()) if suffix.endswith(".gz") else source.read_bytes()
    rng = random.Random(1234)
    for trial in range(300):
        mutated = _mutate_binary(raw, rng, 348)
        path = tmp_path / f"m{trial}{suffix}"
        path.write_bytes(gzip.compress(mutated) if suffix.endswith(".gz") else mutated)
        _assert_image_or_bad_input(path)
        path.unlink()


def test_fuzz_nrrd_headers(tmp_path: Path) -> None:
    source = tmp_path / "source.nrrd"
    sitk.WriteImage(io.to_sitk(volume(), GEOMETRY), str(source), useCompression=True)
    raw = source.read_bytes()
    split = raw.index(b"\n\n") + 2
    header, data = raw[:split].decode("ascii"), raw[split:]
    rng = random.Random(99)
    for trial in range(300):
        path = tmp_path / f"m{trial}.nrrd"
        path.write_bytes(_mutate_text(header, rng).encode("ascii") + data)
        _assert_image_or_bad_input(path)
        path.unlink()


def test_the_voxel_limit_comes_from_the_environment_and_is_checked(tmp_path: Path, monkeypatch) -> None:
    path = write_nifti(tmp_path / "scan.nii.gz", volume())
    monkeypatch.setenv("SARSEG_MAX_VOXELS", "119")
    with pytest.raises(BadInput, match="more than the limit of 119"):
        io.read_image([path])
    monkeypatch.setenv("SARSEG_MAX_VOXELS", "lots")
    with pytest.raises(BadInput, match="SARSEG_MAX_VOXELS: must be a positive whole number"):
        io.read_image([path])


@pytest.mark.parametrize("offset", [float("nan"), float("inf"), -400.0])
def test_nifti_with_an_impossible_data_offset_is_refused_or_read(tmp_path: Path, offset: float) -> None:
    path = write_nifti(tmp_path / "scan.nii", volume())
    patch_nifti(path, 108, "<f", offset)
    _assert_image_or_bad_input(path)
