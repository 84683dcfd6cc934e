"""sarseg.io: geometry round trips on real tumor scans, multi-channel reading, labels, normalisation, DICOM.

The real cases live in ../shared/data (never inside the repository); tests that need them skip when
that folder is absent.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarseg.core.errors import BadInput
from sarseg.io import (
    DEFAULT_NORMALISATION,
    Geometry,
    Normalisation,
    normalisation_for,
    read_header,
    read_image,
    read_label,
    write_image,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"real tumor scans not found at {DATA} (the shared data folder is absent)"
)

BRATS = DATA / "brats2015" / "pat0001"
FLAIR = BRATS / "Flair_subtrMeanDivStd.nii.gz"
T1C = BRATS / "T1c_subtrMeanDivStd.nii.gz"
BRATS_LABEL = BRATS / "OTMultiClass.nii.gz"
TCGA = DATA / "tcga_gbm" / "brain1_image.nrrd"
TCGA_LABEL = DATA / "tcga_gbm" / "brain1_label.nrrd"
PET = DATA / "sarcoma" / "STS_001_PET_image.nii.gz"

CASES = [
    pytest.param("tcga_gbm/brain1_image.nrrd", id="tcga-nrrd-anisotropic-flipped"),
    pytest.param("brats2015/pat0001/Flair_subtrMeanDivStd.nii.gz", id="brats-flair"),
    pytest.param("sarcoma/STS_001_PET_image.nii.gz", id="sarcoma-pet"),
]


def _assert_geometry_matches(geometry: Geometry, original: sitk.Image) -> None:
    assert geometry.size == tuple(original.GetSize())
    np.testing.assert_allclose(geometry.spacing, original.GetSpacing(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(geometry.origin, original.GetOrigin(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(geometry.direction, original.GetDirection(), atol=1e-6)


# ---------------------------------------------------------------- round trips on real cases


@needs_data
@pytest.mark.parametrize("relative", CASES)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_geometry_round_trip(relative: str, suffix: str, tmp_path: Path) -> None:
    path = DATA / relative
    original = sitk.ReadImage(str(path))
    image = read_image([path])

    assert image.array.dtype == np.float32
    assert image.array.shape == (1, *original.GetSize()[::-1])
    assert image.geometry.size == tuple(image.array.shape[1:][::-1])
    _assert_geometry_matches(image.geometry, original)
    np.testing.assert_array_equal(image.array[0], sitk.GetArrayFromImage(original).astype(np.float32))

    out = write_image(tmp_path / f"copy{suffix}", image.array[0], image.geometry)
    assert out == tmp_path / f"copy{suffix}" and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name], "no temporary file left behind"

    back = read_image([out])
    np.testing.assert_array_equal(back.array, image.array)
    assert back.geometry.same_grid(image.geometry)
    _assert_geometry_matches(back.geometry, original)
    assert back.geometry.size == tuple(back.array.shape[1:][::-1])
    assert read_header(out).same_grid(image.geometry)


@needs_data
def test_tcga_geometry_is_anisotropic_and_flipped() -> None:
    """The NRRD case really exercises what the round trip claims to check."""
    geometry = read_header(TCGA)
    assert geometry.size == (256, 256, 25)
    np.testing.assert_allclose(geometry.spacing, (0.78125, 0.78125, 6.5), rtol=1e-6)
    assert not np.allclose(geometry.direction, np.eye(3).ravel())
    np.testing.assert_allclose(geometry.extent_mm, (200.0, 200.0, 162.5), rtol=1e-6)
    assert geometry.same_grid(read_image([TCGA]).geometry)


def test_write_image_rejects_shape_not_matching_grid(tmp_path: Path) -> None:
    geometry = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(ValueError, match="does not match grid size"):
        write_image(tmp_path / "x.nii.gz", np.zeros((4, 5, 6), np.float32), geometry)  # (z,y,x) must be (6,5,4)
    assert not any(tmp_path.iterdir())


def _nrrd(path: Path, array: np.ndarray, geometry_fields: str) -> Path:
    """A NRRD written by hand: SimpleITK refuses to write zero or negative spacing."""
    z, y, x = array.shape
    header = f"NRRD0004\ntype: float\ndimension: 3\nsizes: {x} {y} {z}\nendian: little\nencoding: raw\n{geometry_fields}\n\n"
    path.write_bytes(header.encode("ascii") + array.astype("<f4").tobytes())
    return path


SPACE = "space: left-posterior-superior\nspace origin: (0,0,0)\n"


@pytest.mark.parametrize(
    "fields",
    ["spacings: 1 -2 1", SPACE + "space directions: (1,0,0) (0,0,0) (0,0,1)", "spacings: 1 0 1"],
    ids=["negative", "zero-direction", "zero"],
)
def test_bad_spacing_rejected_by_header_and_full_read(fields: str, tmp_path: Path) -> None:
    """A full ITK read folds a negative spacing into the direction; both readers must still reject it."""
    path = _nrrd(tmp_path / "bad.nrrd", np.arange(512, dtype=np.float32).reshape(8, 8, 8), fields)
    for read in (read_header, lambda p: read_image([p])):
        with pytest.raises(BadInput, match="spacing") as info:
            read(path)
        assert info.value.what == str(path)


def test_flipped_axis_is_not_negative_spacing(tmp_path: Path) -> None:
    path = _nrrd(tmp_path / "flip.nrrd", np.arange(512, dtype=np.float32).reshape(8, 8, 8),
                 SPACE + "space directions: (1,0,0) (0,-2,0) (0,0,1)")
    geometry = read_image([path]).geometry
    assert geometry.same_grid(read_header(path))
    np.testing.assert_allclose(geometry.spacing, (1.0, 2.0, 1.0))
    np.testing.assert_allclose(geometry.direction, (1, 0, 0, 0, -1, 0, 0, 0, 1))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_rejected(suffix: str, tmp_path: Path) -> None:
    """ITK's NIfTI reader zero-fills a truncated file; read_image must refuse it."""
    whole = tmp_path / f"whole{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(3).normal(size=(20, 32, 32)).astype(np.float32)), str(whole))
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert read_image([whole]).array.shape == (1, 20, 32, 32)
    with pytest.raises(BadInput, match="truncated") as info:
        read_image([cut])
    assert info.value.what == str(cut)


def test_multi_member_gzip_nifti_accepted(tmp_path: Path) -> None:
    """A valid .nii.gz whose gzip trailer does not give the whole length (two members) still reads."""
    import gzip

    volume = np.random.default_rng(4).normal(size=(20, 32, 32)).astype(np.float32)
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(plain))
    data = plain.read_bytes()
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    np.testing.assert_array_equal(read_image([two]).array[0], volume)


# ---------------------------------------------------------------- channels


@needs_data
def test_two_channels_on_one_grid() -> None:
    image = read_image([FLAIR, T1C], modalities=("flair", "t1c"))
    assert image.array.shape == (2, 155, 240, 240)
    assert image.array.dtype == np.float32
    assert image.channels == 2
    assert image.modalities == ("flair", "t1c")
    assert image.paths == (str(FLAIR), str(T1C))
    np.testing.assert_array_equal(image.array[1], sitk.GetArrayFromImage(sitk.ReadImage(str(T1C))))
    assert not np.array_equal(image.array[0], image.array[1])


@needs_data
def test_channels_on_different_grids_raise_naming_second_file() -> None:
    with pytest.raises(BadInput, match="different grid") as info:
        read_image([FLAIR, TCGA])
    assert info.value.what == str(TCGA)
    assert str(TCGA) in str(info.value)
    assert str(FLAIR) in str(info.value)  # names the grid it should have matched


@needs_data
def test_channels_resampled_to_first_grid() -> None:
    image = read_image([FLAIR, TCGA], resample_to_first=True)
    flair = read_image([FLAIR]).geometry
    assert image.geometry.same_grid(flair)
    assert image.array.shape == (2, 155, 240, 240)
    assert np.isfinite(image.array).all()
    assert image.array[1].max() > 0  # the T1 brain overlaps the BRATS grid in physical space


# ---------------------------------------------------------------- labels


@needs_data
@pytest.mark.parametrize(
    "image_path, label_path, values",
    [(FLAIR, BRATS_LABEL, {0, 1, 2, 3, 4}), (TCGA, TCGA_LABEL, {0, 1})],
    ids=["brats-float-label", "tcga-int-label"],
)
def test_read_label_on_image_grid(image_path: Path, label_path: Path, values: set[int]) -> None:
    geometry = read_header(image_path)
    label = read_label(label_path, geometry)
    assert label.dtype == np.int16
    assert label.shape == geometry.size[::-1]
    assert set(np.unique(label).tolist()) <= values
    assert (label > 0).any()


@needs_data
def test_read_label_on_other_grid_raises() -> None:
    with pytest.raises(BadInput, match="different grid") as info:
        read_label(TCGA_LABEL, read_header(FLAIR))
    assert info.value.what == str(TCGA_LABEL)


def test_read_label_non_integer_raises(tmp_path: Path) -> None:
    path = tmp_path / "soft.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 4, 4), 0.5, np.float32)), str(path))
    with pytest.raises(BadInput, match="non-integer"):
        read_label(path)


# ---------------------------------------------------------------- normalisation


def test_ct_window() -> None:
    norm = Normalisation(**DEFAULT_NORMALISATION["ct"])
    out = norm(np.array([-3000.0, -1000.0, 0.0, 1000.0, 3000.0], np.float32))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert out.dtype == np.float32


def test_percentile_maps_into_unit_range() -> None:
    array = np.random.default_rng(0).normal(300.0, 80.0, (16, 16, 16)).astype(np.float32)
    out = Normalisation("percentile", 0.5, 99.5)(array)
    assert out.dtype == np.float32 and out.shape == array.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < float(np.median(out)) < 0.6


def test_percentile_on_constant_range_does_not_divide_by_zero() -> None:
    array = np.zeros((8, 8, 8), np.float32)
    array[0, 0, 0] = 5.0  # both percentiles are 0: falls back to min/max
    out = Normalisation("percentile", 1.0, 99.0)(array)
    assert np.isfinite(out).all() and out.max() == 1.0


def test_percentile_ignores_constant_padding() -> None:
    """A skull-stripped scan (BraTS: 83% of the grid at one value) is normalised on its brain: only the
    brain's top 0.5% saturates, not the top 3% as percentiles over the whole grid would give."""
    rng = np.random.default_rng(2)
    array = np.full((40, 40, 40), -5.0, np.float32)
    array[12:28, 12:28, 12:28] = rng.normal(0.0, 1.0, (16, 16, 16))
    out = Normalisation("percentile", 0.5, 99.5)(array)
    inside = out[12:28, 12:28, 12:28]
    assert 0.003 < float((inside == 1.0).mean()) < 0.007
    assert (out[array == -5.0] == 0.0).all()


def test_zscore_over_non_background() -> None:
    rng = np.random.default_rng(1)
    array = np.zeros((20, 20, 20), np.float32)
    array[5:15, 5:15, 5:15] = rng.normal(200.0, 30.0, (10, 10, 10)) + 200.0  # well above background 0
    out = Normalisation("zscore")(array)
    inside = out[array > 0]
    assert abs(float(inside.mean())) < 1e-3
    assert abs(float(inside.std()) - 1.0) < 1e-3
    assert (out[array == 0] < -5).all()  # air keeps the formula's value (the cards of earlier models)
    assert out.dtype == np.float32
    placed = Normalisation("zscore", outside=0.0)(array)
    assert (placed[array == 0] == 0.0).all() and np.array_equal(placed[array > 0], inside)  # air at the mean


def test_outside_must_be_a_number() -> None:
    with pytest.raises(BadInput, match="outside must be a finite number"):
        Normalisation("zscore", outside=float("nan"))


def test_none_leaves_values_unchanged() -> None:
    array = np.arange(8, dtype=np.float32)
    out = Normalisation("none")(array)
    np.testing.assert_array_equal(out, array)
    assert out is not array


def test_unknown_or_inverted_normalisation_raises() -> None:
    with pytest.raises(BadInput, match="unknown kind 'minmax'"):
        Normalisation("minmax")
    with pytest.raises(BadInput, match="must exceed low"):
        Normalisation("ct", 1000.0, -1000.0)


def test_normalisation_for_names() -> None:
    assert normalisation_for("ct_lung", DEFAULT_NORMALISATION) == Normalisation("ct", -1000.0, 1000.0)
    assert normalisation_for("CT", DEFAULT_NORMALISATION).kind == "ct"
    assert normalisation_for("pet", DEFAULT_NORMALISATION).kind == "pet"
    assert normalisation_for("ultrasound", DEFAULT_NORMALISATION) == Normalisation(**DEFAULT_NORMALISATION["default"])
    with pytest.raises(BadInput, match="no 'default' entry"):
        normalisation_for("ultrasound", {"ct": DEFAULT_NORMALISATION["ct"]})


# ---------------------------------------------------------------- DICOM series


def _write_dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float],
                        origin: tuple[float, float, float]) -> None:
    """One file per slice with the geometry tags GDCM needs to sort and stack them (SimpleITK's example)."""
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    now_date, now_time = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    uid = "1.2.826.0.1.3680043.2.1125." + now_date + ".1" + now_time
    common = [
        ("0008|0031", now_time),  # series time
        ("0008|0021", now_date),  # series date
        ("0008|0008", "DERIVED\\SECONDARY"),  # image type
        ("0020|000d", uid + ".1"),  # study instance UID
        ("0020|000e", uid + ".2"),  # series instance UID
        ("0020|0037", "\\".join(map(str, (*direction[0::3], *direction[1::3])))),  # orientation (row, col)
        ("0008|103e", "sar test series"),
        ("0008|0060", "CT"),
    ]
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        for tag, value in common:
            slice_.SetMetaData(tag, value)
        slice_.SetMetaData("0008|0012", now_date)  # instance creation date
        slice_.SetMetaData("0008|0013", now_time)
        slice_.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        slice_.SetMetaData("0020|0013", str(z + 1))  # instance number
        slice_.SetMetaData("0018|0050", str(spacing[2]))  # slice thickness
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_folder(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    rng = np.random.default_rng(2)
    volume = rng.integers(-500, 1500, (8, 16, 16)).astype(np.int16)
    spacing, origin = (0.8, 0.9, 2.5), (-10.0, 20.0, 30.0)
    _write_dicom_series(folder, volume, spacing, origin)

    image = read_image([folder])
    assert image.array.shape == (1, 8, 16, 16)
    np.testing.assert_array_equal(image.array[0], volume.astype(np.float32))
    np.testing.assert_allclose(image.geometry.spacing, spacing, rtol=1e-4)
    np.testing.assert_allclose(image.geometry.origin, origin, atol=1e-3)
    np.testing.assert_allclose(image.geometry.direction, np.eye(3).ravel(), atol=1e-6)
    assert read_header(folder).same_grid(image.geometry)


def test_folder_without_dicom_raises(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(BadInput, match="no DICOM series"):
        read_image([tmp_path])


def test_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        read_image([tmp_path / "absent.nii.gz"])
    with pytest.raises(BadInput, match="no files given"):
        read_image([])


def test_a_4d_decathlon_file_gives_its_channels(tmp_path: Path) -> None:
    """Medical Segmentation Decathlon images hold their modalities along a 4th axis."""
    rng = np.random.default_rng(0)
    volumes = [sitk.GetImageFromArray(rng.random((6, 8, 10)).astype(np.float32)) for _ in range(2)]
    for volume in volumes:
        volume.SetSpacing((1.0, 1.5, 2.0))
    path = tmp_path / "BRATS_001.nii.gz"
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))
    image = read_image([path], ("flair", "t1c"))
    assert image.array.shape == (2, 6, 8, 10)
    assert np.allclose(image.geometry.spacing, (1.0, 1.5, 2.0))
    assert np.array_equal(image.array[1], sitk.GetArrayFromImage(volumes[1]))
    with pytest.raises(BadInput, match="2 channels along a 4th axis"):
        read_label(path)
