"""Pictures for people: three orthogonal slices of a scan with its segmentation overlaid, titled, with a
legend of the labels and, when there is one, the reference drawn as an outline (matplotlib, drawn off
screen without pyplot, so no GUI backend is touched)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

VIEWS = ("axial", "coronal", "sagittal")  # slices across z, y and x of a (Z, Y, X) array
REFERENCE_COLOR = (1.0, 1.0, 0.0)


def _centres(mask: np.ndarray) -> list[int]:
    """Per axis, the slice holding the most marked voxels (the middle one when nothing is marked)."""
    if not mask.any():
        return [n // 2 for n in mask.shape]
    return [int(np.argmax(mask.sum(axis=tuple(a for a in range(3) if a != axis)))) for axis in range(3)]


def overlay_figure(image: np.ndarray, label: np.ndarray, spacing_zyx: Sequence[float],
                   legend: Mapping[int, tuple[str, Sequence[float]]], reference: np.ndarray | None = None,
                   alpha: float = 0.45):
    """A matplotlib Figure: axial, coronal and sagittal slices (head up; physical proportions), each the
    one holding the most segmented or reference voxels, labels filled in their colors (``legend``: value ->
    (name, RGB in 0..1)), the reference outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    centre = _centres((label > 0) | (reference > 0 if reference is not None else False))
    low, high = np.percentile(image, [0.5, 99.5])
    figure = Figure(figsize=(9.0, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    for ax, axis, title in zip(figure.subplots(1, 3), range(3), VIEWS):
        def cut(volume: np.ndarray) -> np.ndarray:
            plane = np.take(volume, centre[axis], axis=axis)
            return plane if axis == 0 else np.flipud(plane)  # head up in coronal and sagittal views

        rows, cols = [s for a, s in enumerate(spacing_zyx) if a != axis]
        ax.imshow(cut(image), cmap="gray", vmin=low, vmax=high, aspect=rows / cols, interpolation="bilinear")
        plane = cut(label)
        fill = np.zeros((*plane.shape, 4))
        for value, (_, color) in legend.items():
            fill[plane == value] = (*color[:3], alpha)
        ax.imshow(fill, aspect=rows / cols, interpolation="nearest")
        if reference is not None and (cut(reference) > 0).any():
            ax.contour(cut(reference) > 0, levels=[0.5], colors=[REFERENCE_COLOR], linewidths=1.2)
        ax.set_title(title)
        ax.set_axis_off()
    handles = [Patch(facecolor=tuple(color[:3]), label=name) for name, color in legend.values()]
    if reference is not None:
        handles.append(Line2D([], [], color=REFERENCE_COLOR, label="reference"))
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.12, wspace=0.05)
    return figure


def overlay_png(path: Path, image: np.ndarray, label: np.ndarray, spacing_zyx: Sequence[float],
                legend: Mapping[int, tuple[str, Sequence[float]]], reference: np.ndarray | None = None) -> Path:
    """:func:`overlay_figure` written as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_figure(image, label, spacing_zyx, legend, reference).savefig(path)
    return path
