"""Evaluation of label maps: Dice, HD95, surface Dice and volumes per label or region (MONAI metrics).

Empty masks are handled explicitly, never as NaN: both empty gives Dice 1 and surface Dice 1 with
distances 0; one empty gives Dice 0, surface Dice 0 and distances reported as null with a flag.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from .core.labels import LabelScheme


def compare(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], tolerance_mm: float = 2.0,
            distances: bool = True) -> dict:
    """Metrics of one predicted mask against its reference mask (both boolean, same grid); without
    ``distances`` only the overlap and volumes (HD95 and surface Dice cost seconds on a whole BraTS grid)."""
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    p, r = int(pred.sum()), int(ref.sum())
    out = {"pred_ml": p * voxel_ml, "ref_ml": r * voxel_ml, "empty_pred": p == 0, "empty_ref": r == 0}
    if p == 0 and r == 0:
        return {**out, "dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0}
    if p == 0 or r == 0:
        return {**out, "dice": 0.0, "hd95_mm": None, "surface_dice": 0.0}
    inter = int(np.logical_and(pred, ref).sum())
    if not distances:
        return {**out, "dice": 2.0 * inter / (p + r)}
    y_pred = torch.from_numpy(pred[None, None].astype(np.float32))
    y_ref = torch.from_numpy(ref[None, None].astype(np.float32))
    spacing = [float(s) for s in spacing_zyx]
    with warnings.catch_warnings():  # MONAI 1.6 warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y_ref, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y_ref, class_thresholds=[tolerance_mm], spacing=spacing, include_background=True)
    return {**out, "dice": 2.0 * inter / (p + r), "hd95_mm": float(hd95.item()), "surface_dice": float(nsd.item())}


def evaluate_maps(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float], labels: LabelScheme,
                  tolerance_mm: float = 2.0, distances: bool = True) -> list[dict]:
    """Per label or region of ``labels``: name plus :func:`compare`'s metrics."""
    return [{"name": name, **compare(p, r, spacing_zyx, tolerance_mm, distances)}
            for name, p, r in zip(labels.names, labels.masks(pred), labels.masks(ref))]
