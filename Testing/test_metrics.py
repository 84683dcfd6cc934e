"""``sarseg.metrics``: Dice, HD95, surface Dice and volumes on masks whose values are known exactly;
empty masks give explicit flags and nulls, never NaN."""

from __future__ import annotations

import numpy as np
import pytest

from sarseg.core.labels import SCHEMES
from sarseg.metrics import compare, evaluate_maps


def mask(*points: tuple[int, int, int], shape=(8, 8, 30)) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for point in points:
        out[point] = True
    return out


def cube(offset_x: int = 0) -> np.ndarray:
    out = np.zeros((10, 10, 10), dtype=bool)
    out[2:6, 2:6, 2 + offset_x: 6 + offset_x] = True
    return out


def test_dice_and_volumes_of_shifted_cubes() -> None:
    result = compare(cube(), cube(1), (2.0, 1.0, 1.0))  # 4^3 voxels each, 3x4x4 shared
    assert result["dice"] == 2 * 48 / 128 == 0.75
    assert result["pred_ml"] == result["ref_ml"] == 64 * 2.0 / 1000
    assert result["hd95_mm"] == pytest.approx(1.0) and result["surface_dice"] == pytest.approx(1.0)
    assert not result["empty_pred"] and not result["empty_ref"]


def test_identical_masks() -> None:
    result = compare(cube(), cube(), (1.0, 1.0, 1.0))
    assert result["dice"] == 1.0 and result["hd95_mm"] == 0.0 and result["surface_dice"] == pytest.approx(1.0)


def test_hd95_uses_the_spacing() -> None:
    """Two single voxels three slices apart (z spacing 2.5 mm): every distance is 7.5 mm."""
    result = compare(mask((1, 1, 1)), mask((4, 1, 1)), (2.5, 1.0, 1.0))
    assert result["dice"] == 0.0 and result["hd95_mm"] == pytest.approx(7.5) and result["surface_dice"] == 0.0


def test_hd95_is_the_95th_percentile_not_the_maximum() -> None:
    """20 shared voxels; the reference adds one 9 mm away: 1 of 21 distances, below the 95th percentile.
    A second outlier 6 mm away: the percentile falls between 0 and 6 mm, at 0.95 * 6 (linear)."""
    line = [(1, 1, x) for x in range(20)]
    one = compare(mask(*line), mask(*line, (1, 1, 28)), (1.0, 1.0, 1.0))
    assert one["hd95_mm"] == 0.0 and one["dice"] == 2 * 20 / 41
    two = compare(mask(*line), mask(*line, (1, 1, 28), (7, 1, 0)), (1.0, 1.0, 1.0))
    assert two["hd95_mm"] == pytest.approx(0.95 * 6.0, abs=1e-5) and two["dice"] == 2 * 20 / 42


def test_surface_dice_tolerance() -> None:
    near, far = mask((1, 1, 1)), mask((1, 1, 3))  # 2 mm apart
    assert compare(near, far, (1.0, 1.0, 1.0), tolerance_mm=2.0)["surface_dice"] == pytest.approx(1.0)
    assert compare(near, far, (1.0, 1.0, 1.0), tolerance_mm=1.5)["surface_dice"] == 0.0


def test_empty_masks_are_flagged_not_nan() -> None:
    empty = np.zeros((10, 10, 10), dtype=bool)
    both = compare(empty, empty, (1.0, 1.0, 1.0))
    assert both == {"pred_ml": 0.0, "ref_ml": 0.0, "empty_pred": True, "empty_ref": True, "dice": 1.0, "hd95_mm": 0.0,
                    "surface_dice": 1.0}
    missed = compare(empty, cube(), (1.0, 1.0, 1.0))
    assert missed == {"pred_ml": 0.0, "ref_ml": 0.064, "empty_pred": True, "empty_ref": False, "dice": 0.0,
                      "hd95_mm": None, "surface_dice": 0.0}
    invented = compare(cube(), empty, (1.0, 1.0, 1.0))
    assert invented["empty_ref"] and not invented["empty_pred"] and invented["dice"] == 0.0 and invented["hd95_mm"] is None


def test_evaluate_maps_per_region() -> None:
    """BraTS regions on a reference holding edema (2), necrosis (1) and enhancing tumor (4); the prediction
    calls the necrosis edema: whole tumor right, core and enhancing partly."""
    ref = np.zeros((4, 4, 8), dtype=np.int16)
    ref[:, :, 0:2], ref[:, :, 2:4], ref[:, :, 4:6] = 2, 1, 4
    pred = np.where(ref == 1, 2, ref).astype(np.int16)
    rows = {r["name"]: r for r in evaluate_maps(pred, ref, (1.0, 1.0, 1.0), SCHEMES["brats"])}
    assert list(rows) == ["whole tumor", "tumor core", "enhancing tumor"]
    assert rows["whole tumor"]["dice"] == 1.0
    assert rows["tumor core"]["dice"] == 2 * 32 / (32 + 64)  # {1, 3, 4}: 32 predicted voxels, 64 in the reference
    assert rows["enhancing tumor"]["dice"] == 1.0 and rows["enhancing tumor"]["ref_ml"] == 0.032
