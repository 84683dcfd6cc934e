"""Synthetic multi-modal tumor phantoms: the built-in default data, so a fresh clone can pretrain (and
later fine-tune and segment) with nothing else. Real scans are for tests and benchmarks.

A case is a textured body with a few organs and one or two tumors of different sizes (a necrotic core
inside an enhancing rim), seen as CT (HU), MR (arbitrary units) and PET (SUV) on one grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from .core import paths
from .io import Geometry, write_image

MODALITIES = ("ct", "mr", "pet")
SHAPE_ZYX = (48, 96, 96)
SPACING_XYZ = (1.5, 1.5, 3.0)

# intensity of (background, body, organ, tumor rim, tumor core) per modality
_LEVELS = {
    "ct": (-1000.0, 40.0, 90.0, 60.0, 20.0),
    "mr": (0.0, 300.0, 500.0, 800.0, 150.0),
    "pet": (0.0, 1.0, 2.0, 8.0, 1.5),
}
_NOISE = {"ct": 15.0, "mr": 25.0, "pet": 0.3}


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1.0


def make_case(seed: int, shape: tuple[int, int, int] = SHAPE_ZYX) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Images per modality (Z, Y, X) float32 and a label map (0 background, 1 tumor rim, 2 core)."""
    rng = np.random.default_rng(seed)
    shape_arr = np.array(shape, dtype=float)
    grid = np.indices(shape, dtype=np.float32)
    body = _ellipsoid(grid, shape_arr / 2, shape_arr * np.array([0.45, 0.42, 0.45]))
    organs = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(2, 4)):
        organs |= _ellipsoid(grid, shape_arr * rng.uniform(0.35, 0.65, 3), shape_arr * rng.uniform(0.06, 0.14, 3)) & body
    label = np.zeros(shape, dtype=np.int16)
    for size in rng.choice([0.1, 0.15, 0.2], size=rng.integers(1, 3), replace=False):
        centre = shape_arr * rng.uniform(0.3, 0.7, 3)
        radii = shape_arr * size * rng.uniform(0.8, 1.2, 3) * np.array([0.7, 1.0, 1.0])
        tumor = _ellipsoid(grid, centre, radii) & body
        label[tumor] = 1
        label[_ellipsoid(grid, centre, radii * 0.5) & body] = 2
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    texture /= texture.std() + 1e-6
    images = {}
    for modality in MODALITIES:
        background, tissue, organ, rim, core = _LEVELS[modality]
        image = np.full(shape, background, dtype=np.float32)
        image[body] = tissue
        image[organs] = organ
        image[label == 1] = rim
        image[label == 2] = core
        noise = _NOISE[modality] * (0.6 * texture + 0.4 * rng.standard_normal(shape))
        image = ndimage.gaussian_filter(image, 0.7) + noise * body
        if modality == "pet":
            image = np.clip(image, 0.0, None)
        images[modality] = image.astype(np.float32)
    return images, label


def geometry(shape: tuple[int, int, int] = SHAPE_ZYX) -> Geometry:
    """A grid with anisotropic spacing and a non-identity direction, like real scans."""
    direction = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    return Geometry(tuple(shape[::-1]), SPACING_XYZ, (-72.0, 72.0, -70.0), direction)


def cache_folder() -> Path:
    return paths.cache() / "phantoms-v2"


def write_cases(folder: Path, cases: int, first_seed: int = 0) -> list[dict[str, str]]:
    """Write (or reuse) ``cases`` phantoms: ``case{i}_{modality}.nii.gz`` and ``case{i}_label.nii.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(first_seed, first_seed + cases):
        paths = {m: folder / f"case{i:03d}_{m}.nii.gz" for m in MODALITIES} | {"label": folder / f"case{i:03d}_label.nii.gz"}
        if not all(p.exists() for p in paths.values()):
            images, label = make_case(i)
            for modality, image in images.items():
                write_image(paths[modality], image, geometry())
            write_image(paths["label"], label, geometry())
        out.append({k: str(v) for k, v in paths.items()})
    return out
