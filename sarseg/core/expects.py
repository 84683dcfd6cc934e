"""What a model expects of its input, and the warnings when a scan does not look like it.

A model trained on BraTS learned skull-stripped, co-registered MR at 1 mm: on a head scan with the
skull, or at 5 mm slices, it segments something, confidently and wrong. The card says what the input
must look like (``expects`` in ``model.json``); ``sarseg segment`` and the Slicer module warn (they do
not refuse: the user may know better). Standard library only (numpy inside :func:`background_fraction`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from . import fields

BACKGROUND_STRIPPED = 0.4  # skull-stripped brain MR: 80-90 % of the voxels are exactly the background value


@dataclass(frozen=True)
class Expectations:
    """``spacing_mm``: the voxel size (x, y, z) the model was trained at, within ``spacing_tolerance``
    (a fraction: 0.5 accepts 0.5-1.5 mm for 1 mm); ``skull_stripped``: the volumes hold only the brain,
    the rest exactly one background value (as the BraTS data)."""

    spacing_mm: tuple[float, float, float] | None = None
    spacing_tolerance: float = 0.5
    skull_stripped: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: object) -> "Expectations":
        fields.mapping(data, where, "expects", ("spacing_mm", "spacing_tolerance", "skull_stripped"))
        spacing = data.get("spacing_mm")
        if spacing is not None:
            items = fields.array(spacing, where, "expects.spacing_mm", 3, 3)
            spacing = tuple(fields.number(v, where, f"expects.spacing_mm[{i}]", 1e-3, 1e3) for i, v in enumerate(items))
        tolerance = fields.number(data.get("spacing_tolerance", 0.5), where, "expects.spacing_tolerance", 0.0, 10.0)
        stripped = fields.boolean(data.get("skull_stripped", False), where, "expects.skull_stripped")
        return cls(spacing, tolerance, stripped)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"spacing_tolerance": self.spacing_tolerance, "skull_stripped": self.skull_stripped}
        if self.spacing_mm is not None:
            out["spacing_mm"] = list(self.spacing_mm)
        return out

    def warnings(self, spacing_xyz: Sequence[float], background: float | None) -> list[str]:
        """Why the scan (voxel size x, y, z in mm; share of voxels at the background value) does not
        look like the model's training data; empty when it does."""
        out = []
        if self.spacing_mm is not None:
            far = [abs(s - e) > self.spacing_tolerance * e for s, e in zip(spacing_xyz, self.spacing_mm)]
            if any(far):
                got = " x ".join(f"{s:g}" for s in spacing_xyz)
                want = " x ".join(f"{e:g}" for e in self.spacing_mm)
                out.append(f"voxels of {got} mm; the model was trained on {want} mm (resample the scan)")
        if self.skull_stripped and background is not None and background < BACKGROUND_STRIPPED:
            out.append(f"only {background:.0%} of the voxels are background: the scan does not look skull-stripped, "
                       "and the model was trained on skull-stripped, co-registered brain MR (as BraTS)")
        return out


def background_fraction(array: Any) -> float:
    """The share of voxels at which every channel holds its minimum (C, Z, Y, X, or one channel Z, Y, X):
    the zero padding around a skull-stripped brain, about none in an unprocessed head scan."""
    import numpy as np

    data = np.asarray(array)
    data = data.reshape((data.shape[0] if data.ndim == 4 else 1, -1))
    return float(np.mean((data == data.min(axis=1, keepdims=True)).all(axis=0)))
