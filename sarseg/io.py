"""Reading and writing images: the only place that knows file formats.

An :class:`Image` is a float32 array (C, Z, Y, X) plus the full geometry of its grid (origin, spacing,
direction in SimpleITK's LPS convention), so results can be written back onto the exact input grid.
Each channel is one co-registered file (or DICOM series folder).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from .core import fields, paths
from .core.errors import BadInput
from .core.files import atomic_path, check_writable

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Geometry:
    """A voxel grid in physical space (SimpleITK order: x, y, z; direction row-major 3x3)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            tuple(int(s) for s in image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(o) for o in image.GetOrigin()),
            tuple(float(d) for d in image.GetDirection()),
        )

    def same_grid(self, other: "Geometry", tol: float = 1e-4) -> bool:
        return (
            self.size == other.size
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=tol, atol=tol * max(1.0, max(self.spacing)))
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical extent along x, y, z."""
        return tuple(n * s for n, s in zip(self.size, self.spacing))


@dataclass
class Image:
    """Channels of one case on one grid."""

    array: np.ndarray  # float32 (C, Z, Y, X)
    geometry: Geometry
    paths: tuple[str, ...] = ()
    modalities: tuple[str, ...] = field(default_factory=tuple)

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])


def _reader_for(path: Path) -> sitk.ImageFileReader | sitk.ImageSeriesReader:
    if path.is_dir():
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not ids:
            raise BadInput(path, "folder holds no DICOM series")
        if len(ids) > 1:
            raise BadInput(path, f"folder holds {len(ids)} DICOM series; point at one series' folder")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))
        return reader
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    return reader


def read_header(path: PathLike, channels: bool = False) -> Geometry:
    """Read only the header (fast): size, spacing, origin and direction; checks 3D and spacing.
    With ``channels``, a 4D file holding channels along its 4th axis (Decathlon style) passes too."""
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "no such file or folder")
    reader = _reader_for(path)
    if isinstance(reader, sitk.ImageSeriesReader):
        return _check_geometry(path, _read(path, reader))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise BadInput(path, f"cannot read image header ({_first_line(exc)})") from None
    if reader.GetDimension() != 3 and not (reader.GetDimension() == 4 and (channels or reader.GetSize()[3] == 1)):
        raise BadInput(path, f"is {reader.GetDimension()}D (size {reader.GetSize()}); a 3D volume is needed")
    if reader.GetNumberOfComponents() != 1:
        raise BadInput(path, f"has {reader.GetNumberOfComponents()} components per voxel; one is needed")
    geometry = Geometry(
        tuple(int(s) for s in reader.GetSize()[:3]),
        tuple(float(s) for s in reader.GetSpacing()[:3]),
        tuple(float(o) for o in reader.GetOrigin()[:3]),
        tuple(float(d) for d in np.asarray(reader.GetDirection()).reshape(reader.GetDimension(), -1)[:3, :3].ravel()),
    )
    _check_spacing(path, geometry.spacing)
    return geometry


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _read(path: Path, reader: sitk.ImageFileReader | sitk.ImageSeriesReader) -> sitk.Image:
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise BadInput(path, f"cannot read image, unreadable or truncated ({_first_line(exc)})") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    return image


def _check_spacing(path: Path, spacing: Sequence[float]) -> None:
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise BadInput(path, f"has zero, negative or invalid voxel spacing {tuple(spacing)}")


def _check_geometry(path: Path, image: sitk.Image) -> Geometry:
    if image.GetDimension() != 3:
        raise BadInput(path, f"is {image.GetDimension()}D (size {image.GetSize()}); a 3D volume is needed")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BadInput(path, f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; one is needed")
    geometry = Geometry.of(image)
    _check_spacing(path, geometry.spacing)
    return geometry


# Limits a header must respect before anything is allocated (the README's reliability section).
MAX_VOXELS = 2**29  # per volume (SARSEG_MAX_VOXELS overrides it): 512 Mi voxels, 2 GiB as float32
MAX_COMPRESSION = 1100  # zlib/gzip cannot shrink data by more than about 1032:1


def _check_declared_size(path: Path, size: Sequence[int]) -> None:
    """Refuse a header whose voxel count exceeds :data:`MAX_VOXELS` or what the file could hold even at
    the best compression ratio (a 1 KB file declaring 1200^3 voxels), before reading its data."""
    voxels, most = math.prod(int(s) for s in size), paths.limit("SARSEG_MAX_VOXELS", MAX_VOXELS)
    if voxels > most:
        raise BadInput(path, f"declares {voxels:,} voxels (size {tuple(size)}), more than the limit of "
                             f"{most:,} (set SARSEG_MAX_VOXELS to change it)")
    detached = path.name.lower().endswith((".nhdr", ".mhd"))  # the voxels live in another file
    if not detached and voxels > path.stat().st_size * MAX_COMPRESSION:
        raise BadInput(path, f"declares {voxels:,} voxels (size {tuple(size)}) but holds only "
                             f"{path.stat().st_size:,} bytes: the header is wrong or the file truncated")


@dataclass(frozen=True)
class _NiftiHeader:
    dims: tuple[int, ...]
    pixdim: tuple[float, ...]
    datatype: int
    bitpix: int
    offset: int
    slope: float
    endian: str


_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_header(path: Path, gz: bool) -> _NiftiHeader | None:
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            header = f.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise BadInput(path, f"cannot read image header ({exc})") from None
    for endian in "<>":
        if len(header) >= 352 and struct.unpack_from(endian + "i", header)[0] == 348:  # NIfTI-1
            return _NiftiHeader(struct.unpack_from(endian + "8h", header, 40), struct.unpack_from(endian + "8f", header, 76),
                                struct.unpack_from(endian + "h", header, 70)[0], struct.unpack_from(endian + "h", header, 72)[0],
                                _offset(struct.unpack_from(endian + "f", header, 108)[0], 352),
                                struct.unpack_from(endian + "f", header, 112)[0], endian)
        if len(header) >= 540 and struct.unpack_from(endian + "i", header)[0] == 540:  # NIfTI-2
            return _NiftiHeader(struct.unpack_from(endian + "8q", header, 16), struct.unpack_from(endian + "8d", header, 104),
                                struct.unpack_from(endian + "h", header, 12)[0], struct.unpack_from(endian + "h", header, 14)[0],
                                _offset(struct.unpack_from(endian + "q", header, 168)[0], 544),
                                struct.unpack_from(endian + "d", header, 176)[0], endian)
    return None  # not a header we know; ITK reports it


def _offset(value: float, header_end: int) -> int:
    """The data offset a header declares, or -1 when it is no offset (NaN, infinite, inside the header);
    ITK then reports the file."""
    return int(value) if math.isfinite(value) and header_end <= value < 2**62 else -1


def _check_nifti(path: Path) -> None:
    """What ITK's NIfTI reader hides: it turns NaN/Inf voxels into 0, a pixdim of 0 into 1 mm, and fills
    the voxels missing from a truncated file with zeros. Checked on the header and the raw data."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    gz = name.endswith(".gz")
    h = _nifti_header(path, gz)
    if h is None:
        return
    ndim = h.dims[0]
    if not 1 <= ndim <= 7 or h.bitpix <= 0 or h.offset < 0 or any(d <= 0 for d in h.dims[1: ndim + 1]):
        return
    spatial = h.pixdim[1: min(ndim, 3) + 1]
    if any(not math.isfinite(p) or p <= 0 for p in spatial):
        raise BadInput(path, f"has zero, negative or invalid voxel spacing {tuple(spatial)} in its header (pixdim)")
    if h.slope != 0 and not math.isfinite(h.slope):
        raise BadInput(path, f"has an invalid intensity scaling (scl_slope {h.slope})")
    _check_declared_size(path, h.dims[1: ndim + 1])
    expected = h.offset + math.prod(h.dims[1: ndim + 1]) * h.bitpix // 8
    dtype = _NIFTI_FLOATS.get(h.datatype)
    if not gz:
        actual = path.stat().st_size
        if actual >= expected and dtype:
            with open(path, "rb") as f:
                f.seek(h.offset)
                _check_finite_stream(path, f, h.endian + dtype)
    else:
        actual = 0
        try:
            with gzip.open(path, "rb") as f:
                if dtype:  # float data: scan every voxel while counting the bytes
                    f.seek(h.offset)
                    actual = h.offset + _check_finite_stream(path, f, h.endian + dtype)
                else:
                    with open(path, "rb") as raw:  # the gzip trailer holds the length mod 2**32
                        raw.seek(-4, os.SEEK_END)
                        if struct.unpack("<I", raw.read(4))[0] == expected % 2**32:
                            return
                    while chunk := f.read(1 << 22):
                        actual += len(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadInput(path, f"is truncated or corrupt ({exc})") from None
    if actual < expected:
        raise BadInput(path, f"is truncated: {actual} of {expected} bytes")


def _check_finite_stream(path: Path, f, dtype: str) -> int:
    """Read ``f`` to its end as ``dtype`` values; refuse NaN/Inf. Returns the bytes read."""
    itemsize, count, bad, rest = np.dtype(dtype).itemsize, 0, 0, b""
    while chunk := f.read(1 << 22):
        count += len(chunk)
        data = rest + chunk
        whole = len(data) - len(data) % itemsize
        values = np.frombuffer(data[:whole], dtype=dtype)
        bad += int(values.size - np.isfinite(values).sum())
        rest = data[whole:]
    if bad:
        raise BadInput(path, f"has {bad} NaN or infinite voxels")
    return count


def read_channels(path: PathLike) -> list[sitk.Image]:
    """A file's (or DICOM series folder's) 3D volumes: one, or one per channel of a 4D file that holds
    channels along its 4th axis (the Medical Segmentation Decathlon's multi-modal images)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "no such file or folder")
    if not path.is_dir():
        # check the header as stored: a full read silently turns a negative spacing into a flipped direction
        geometry = read_header(path, channels=True)
        _check_declared_size(path, geometry.size)
        _check_nifti(path)
    image = _read(path, _reader_for(path))
    images = [image[:, :, :, i] for i in range(image.GetSize()[3])] if image.GetDimension() == 4 else [image]
    for volume in images:
        _check_geometry(path, volume)
    return images


def read_sitk(path: PathLike) -> sitk.Image:
    """Read one 3D scalar volume (file or DICOM series folder), checked for dimension and spacing."""
    images = read_channels(path)
    if len(images) != 1:
        raise BadInput(path, f"holds {len(images)} channels along a 4th axis; a single 3D volume is needed here")
    return images[0]


def check_intensities(path: PathLike, array: np.ndarray) -> None:
    """Reject voxels that are NaN/Inf and volumes that hold a single value (nothing to learn or segment)."""
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise BadInput(path, f"has {bad} NaN or infinite voxels")
    if array.size == 0 or float(array.min()) == float(array.max()):
        raise BadInput(path, "is constant (every voxel has the same value)")


def read_image(
    paths: Sequence[PathLike],
    modalities: Sequence[str] = (),
    resample_to_first: bool = False,
) -> Image:
    """Read co-registered files as the channels of one image (a 4D file gives all its channels).

    Channels must share the first file's grid; with ``resample_to_first`` the others are resampled
    (linear) onto it instead, an explicit choice since resampling changes the data.
    """
    if not paths:
        raise BadInput("image", "no files given")
    arrays, geometry = [], None
    for path, image in ((p, i) for p in paths for i in read_channels(p)):
        this = Geometry.of(image)
        if geometry is None:
            geometry, first = this, image
        elif not this.same_grid(geometry):
            if not resample_to_first:
                raise BadInput(
                    path,
                    f"is on a different grid than {paths[0]} ({_grid_difference(this, geometry)}); "
                    "resample it or allow resampling",
                )
            image = sitk.Resample(image, first, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
        check_intensities(path, array)
        arrays.append(array)
    return Image(np.stack(arrays), geometry, tuple(str(p) for p in paths), tuple(modalities))


def read_label(path: PathLike, reference: Geometry | None = None) -> np.ndarray:
    """Read a label map as int16 (Z, Y, X); with ``reference`` it must lie on that grid."""
    image = read_sitk(path)
    geometry = Geometry.of(image)
    if reference is not None and not geometry.same_grid(reference):
        raise BadInput(
            path,
            f"label map is on a different grid than its image ({_grid_difference(geometry, reference)})",
        )
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise BadInput(path, "label map holds non-integer values")
    return array.astype(np.int16)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _grid_difference(this: Geometry, other: Geometry) -> str:
    """Size, spacing, origin and direction of two grids side by side (``this`` vs ``other``)."""
    return (f"size {this.size} vs {other.size}, spacing {_fmt(this.spacing)} vs {_fmt(other.spacing)}, "
            f"origin {_fmt(this.origin)} vs {_fmt(other.origin)}, direction {_fmt(this.direction)} vs "
            f"{_fmt(other.direction)}")


def to_sitk(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A (Z, Y, X) array on ``geometry`` as a SimpleITK image."""
    if tuple(array.shape[::-1]) != geometry.size:
        raise ValueError(f"array shape {array.shape} does not match grid size {geometry.size} (x, y, z)")
    return geometry.apply_to(sitk.GetImageFromArray(array))


WRITABLE = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha")


def check_output_path(path: PathLike, what: str = "output") -> Path:
    """Refuse, before any work, an output that cannot be written: an unknown extension, a folder, or a
    folder that does not exist or is not writable."""
    path = Path(path)
    if not path.name.lower().endswith(WRITABLE):
        raise BadInput(path, f"{what}: unknown file type; use one of {', '.join(WRITABLE)}")
    if path.is_dir():
        raise BadInput(path, f"{what}: is a folder; give a file name")
    check_writable(path, what)
    return path


def _write_atomic(path: PathLike, image: sitk.Image) -> Path:
    """Write through a temporary file beside ``path``, read it back and compare, then rename: a killed
    writer or a full disk (ITK's writers do not report short writes) leaves no partial file."""
    path = check_output_path(path)
    suffix = ".seg.nrrd" if path.name.endswith(".seg.nrrd") else ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    try:
        with atomic_path(path, suffix) as tmp:
            sitk.WriteImage(image, tmp, useCompression=True)
            _check_nifti(Path(tmp))
            back = sitk.ReadImage(tmp)
            if not np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image)):
                raise OSError("the file read back differs from what was written")
    except BadInput as exc:  # the temporary file failed a check of _check_nifti
        raise BadInput(path, f"was not written completely (is the disk full?): {exc.problem}; "
                             "nothing was kept") from None
    except (OSError, RuntimeError) as exc:
        raise BadInput(path, f"cannot be written ({_first_line(exc)}); nothing was kept") from None
    return path


def write_image(path: PathLike, array: np.ndarray, geometry: Geometry) -> Path:
    """Write a (Z, Y, X) array, or (C, Z, Y, X) as a multi-component image, on ``geometry`` atomically."""
    if array.ndim == 4:
        image = geometry.apply_to(sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True))
    else:
        image = to_sitk(array, geometry)
    return _write_atomic(path, image)


def write_segmentation(path: PathLike, label: np.ndarray, geometry: Geometry, segments: Sequence[Mapping]) -> Path:
    """A label map as NIfTI/NRRD, or as Slicer's ``.seg.nrrd`` with each segment's name, color and
    label value (``segments``: dicts with name, value, color) so Slicer loads it as a segmentation."""
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        return write_image(path, label.astype(np.int16), geometry)
    image = to_sitk(label.astype(np.uint8 if label.max() < 256 else np.int16), geometry)
    image.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    image.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    image.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    extent = " ".join(f"0 {s - 1}" for s in geometry.size)
    for i, segment in enumerate(segments):
        prefix = f"Segment{i}_"
        image.SetMetaData(prefix + "ID", f"Segment_{segment['value']}")
        image.SetMetaData(prefix + "Name", str(segment["name"]))
        image.SetMetaData(prefix + "Color", " ".join(f"{c:.4f}" for c in segment["color"]))
        image.SetMetaData(prefix + "LabelValue", str(int(segment["value"])))
        image.SetMetaData(prefix + "Layer", "0")
        image.SetMetaData(prefix + "Extent", extent)
        image.SetMetaData(prefix + "Tags", "Segmentation.Status:inprogress|")
    return _write_atomic(path, image)


# ---------------------------------------------------------------- normalisation

NORMALISERS = ("ct", "percentile", "zscore", "pet", "none")


@dataclass(frozen=True)
class Normalisation:
    """Per-modality intensity normalisation, chosen by name in config.

    kind ``ct``: window [low, high] in HU mapped to [0, 1]; ``percentile``: the (low, high) percentiles of
    the voxels above the volume's minimum mapped to [0, 1] (MR); ``zscore``: mean/std over those voxels
    (MR); ``pet``: SUV clipped to [low, high] mapped to [0, 1]; ``none``: unchanged. ``outside``, when set,
    is the value the voxels at the volume's minimum (air, padding: outside the scan) take afterwards.
    Fine-tuning from scratch z-scores MR with ``outside`` 0, the mean, like nnU-Net's nonzero mask (there one
    mask for all channels, here each channel's own minimum): z-scored
    air left at its extreme value skews the instance norm of every window that holds some (on BraTS from
    one labeled case, whole tumor 0.40 -> 0.57 on a development fold, docs/bench-ssl). Unset, as in the
    cards of models made before it existed, the voxels keep the formula's value.
    """

    kind: str = "percentile"
    low: float = 0.5
    high: float = 99.5
    outside: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in NORMALISERS:
            raise BadInput("normalisation", f"unknown kind {self.kind!r}; choose one of {', '.join(NORMALISERS)}")
        if self.kind != "none" and not self.high > self.low:
            raise BadInput("normalisation", f"{self.kind}: high ({self.high}) must exceed low ({self.low})")
        if self.kind == "percentile" and not 0 <= self.low < self.high <= 100:
            raise BadInput("normalisation", f"percentiles must lie in [0, 100] (got {self.low}, {self.high})")
        if self.outside is not None:
            fields.number(self.outside, "normalisation", "outside")

    def __call__(self, array: np.ndarray) -> np.ndarray:
        array = array.astype(np.float32, copy=False)
        above = array > array.min()  # the scan; the rest is air or padding
        out = self._scaled(array, above)
        if self.outside is not None:
            out[~above] = self.outside
        return out

    def _scaled(self, array: np.ndarray, above: np.ndarray) -> np.ndarray:
        if self.kind == "none":
            return array.copy()
        if self.kind == "zscore":
            inside = _above_background(array, above)
            return ((array - inside.mean()) / max(float(inside.std()), 1e-6)).astype(np.float32)
        if self.kind == "percentile":
            low, high = np.percentile(_above_background(array, above), [self.low, self.high])
            if high <= low:
                low, high = float(array.min()), float(array.max())
        else:
            low, high = self.low, self.high
        return np.clip((array - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


def body_mask(array: np.ndarray) -> np.ndarray:
    """(Z, Y, X) True where some channel of a raw (C, Z, Y, X) image is above its minimum: the scan, not the
    padding or air around it (a skull-stripped brain fills about a sixth of a BraTS grid)."""
    return (array > array.min(axis=(1, 2, 3), keepdims=True)).any(0)


def _above_background(array: np.ndarray, above: np.ndarray) -> np.ndarray:
    """The voxels ``above`` the volume's minimum: skull-stripped or padded scans fill most of their grid with
    one constant value, which would otherwise drag the statistics (on BraTS, p99.5 of the whole grid
    clips half the tumor)."""
    inside = array[above]
    return inside if inside.size else array.ravel()


DEFAULT_NORMALISATION: dict[str, dict] = {
    "ct": {"kind": "ct", "low": -1000.0, "high": 1000.0},
    "pet": {"kind": "pet", "low": 0.0, "high": 20.0},
    "mr": {"kind": "percentile", "low": 0.5, "high": 99.5},
    "default": {"kind": "percentile", "low": 0.5, "high": 99.5},
}


def normalisation_for(name: str, table: Mapping[str, Mapping]) -> Normalisation:
    """The entry for a source or modality name; names like ``ct_lung`` match ``ct`` by prefix, else ``default``."""
    key = name.lower()
    if key not in table:
        key = next((k for k in table if k != "default" and key.startswith(k)), "default")
    if key not in table:
        raise BadInput("normalisation", f"no entry for {name!r} and no 'default' entry")
    return Normalisation(**table[key])
