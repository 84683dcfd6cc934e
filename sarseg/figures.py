"""Pictures for people: three orthogonal slices of a scan with its segmentation overlaid, as a PNG
written through SimpleITK (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


def _grey(plane: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip((plane - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def overlay_png(
    path: Path,
    image: np.ndarray,
    label: np.ndarray,
    spacing_zyx: Sequence[float],
    colors: Mapping[int, Sequence[float]],
    alpha: float = 0.45,
    height: int = 256,
) -> Path:
    """Axial, coronal and sagittal slices, each the one holding the most segmented voxels (the middle
    one when empty), resampled to square pixels, side by side."""
    fg = label > 0
    centre = [int(np.argmax(fg.sum(axis=tuple(a for a in range(3) if a != axis)))) if fg.any() else label.shape[axis] // 2
              for axis in range(3)]
    low, high = np.percentile(image, [0.5, 99.5])
    panels = []
    for axis in range(3):
        img = np.take(image, centre[axis], axis=axis)
        lab = np.take(label, centre[axis], axis=axis)
        pixel = [s for a, s in enumerate(spacing_zyx) if a != axis]
        width = height * (img.shape[1] * pixel[1]) / (img.shape[0] * pixel[0])  # keep physical proportions
        zoom = (height / img.shape[0], width / img.shape[1])
        img = ndimage.zoom(img, zoom, order=1)
        lab = ndimage.zoom(lab, zoom, order=0)
        rgb = np.repeat(_grey(img, low, high)[..., None], 3, axis=2).astype(np.float32)
        for value, color in colors.items():
            mask = lab == value
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * 255 * np.asarray(color, dtype=np.float32)
        panels.append(np.flipud(rgb) if axis != 0 else rgb)  # head up in coronal and sagittal views
        panels.append(np.zeros((height, 4, 3), dtype=np.float32))
    picture = np.concatenate(panels[:-1], axis=1).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(picture, isVector=True), str(path))
    return path
