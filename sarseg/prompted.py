"""Segmenting with a promptable model (a ``model.json`` with ``prompts``): prompts in LPS mm checked
against the image and turned into voxels, guidance channels beside the image channels, and the sliding
window of :func:`sarseg.infer.predict` run on a crop around the prompts only: the bounding box of the
positive clicks and the box widened by half a patch on each side, at least one patch. One click thus
costs one window however large the volume, and nothing is segmented outside the crop. Negative clicks
do not widen the crop: measured on BraTS (lesion-click, FLAIR, tumor core), crops that grew with each
negative click took in more bright tissue than the click removed, and Dice fell with every correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch

from .clicks import VoxelPrompts, guidance
from .core.card import InferenceConfig, PromptSpec
from .core.errors import BadInput
from .core.labels import LabelScheme
from .core.prompts import Prompts, show_point
from .infer import Segmenter, WindowsDone, normalise_channels, postprocess, predict, roi_box
from .io import Geometry, Image, body_mask


def _grid(geometry: Geometry) -> sitk.Image:
    """A one-voxel image on ``geometry`` (index <-> physical point does not depend on the size)."""
    return geometry.apply_to(sitk.Image([1, 1, 1], sitk.sitkUInt8))


def extent(geometry: Geometry) -> str:
    """Where the image's voxels lie, in words: its axis-aligned bounds in LPS mm (voxel edges)."""
    grid = _grid(geometry)
    corners = np.array([grid.TransformContinuousIndexToPhysicalPoint([(-0.5, n - 0.5)[c >> k & 1] for k, n in enumerate(geometry.size)])
                        for c in range(8)])
    return ", ".join(f"{axis} {lo:g}..{hi:g}" for axis, lo, hi in zip("xyz", corners.min(0).round(2), corners.max(0).round(2))) + " mm"


def to_voxels(prompts: Prompts, geometry: Geometry, where: str) -> VoxelPrompts:
    """The prompts on the image's grid: each click the voxel it lies in, the box the voxels whose centres
    it holds; a click outside the image (or a box holding no voxel centre) is ``BadInput(where, ...)``."""
    grid, size = _grid(geometry), np.array(geometry.size)

    def voxel(point: Sequence[float]) -> tuple[int, int, int]:
        index = np.array(grid.TransformPhysicalPointToContinuousIndex([float(v) for v in point]))
        if not np.all((index >= -0.5) & (index <= size - 0.5)):
            raise BadInput(where, f"point {show_point(point)} (LPS mm) lies outside the image, whose voxels span "
                                  f"{extent(geometry)}")
        x, y, z = np.clip(np.floor(index + 0.5), 0, size - 1).astype(int)
        return int(z), int(y), int(x)

    box = None
    if prompts.box is not None:
        z, y, x = roi_box(geometry, prompts.box, where)
        box = (z.start, y.start, x.start, z.stop, y.stop, x.stop)
    return VoxelPrompts(tuple(map(voxel, prompts.positive)), tuple(map(voxel, prompts.negative)), box)


def crop_around(prompts: VoxelPrompts, shape: Sequence[int], patch: Sequence[int]) -> tuple[slice, slice, slice]:
    """The voxels (z, y, x slices) a prompted segmentation runs on: the bounding box of the positive clicks
    and the box (:meth:`VoxelPrompts.bounds`) widened by half a patch on each side, at least a patch where the volume allows, moved inside the volume."""
    shape, patch = np.array(shape), np.array(patch)
    low, high = prompts.bounds()
    low, high = low - patch // 2, high - 1 + patch - patch // 2  # one click: exactly one patch, centred on it
    short = np.maximum(patch - (high - low), 0)
    low, high = low - short // 2, high + short - short // 2
    shift = np.maximum(-low, 0) - np.maximum(high - shape, 0)  # into the volume, keeping the size where it fits
    low, high = np.maximum(low + shift, 0), np.minimum(high + shift, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))  # type: ignore[return-value]


@torch.no_grad()
def predict_prompted(net: torch.nn.Module, volume: torch.Tensor, prompts: VoxelPrompts, spec: PromptSpec,
                     patch_zyx: Sequence[int], labels: LabelScheme, cfg: InferenceConfig, device: torch.device,
                     on_windows: WindowsDone | None = None, body: np.ndarray | None = None,
                     ) -> tuple[tuple[slice, slice, slice], torch.Tensor]:
    """The crop around the prompts (z, y, x slices of ``volume``, a normalised (C, Z, Y, X) tensor) and the
    probabilities (K, z, y, x) on it; ``body`` as :func:`~sarseg.infer.predict`'s, on the whole volume."""
    region = crop_around(prompts, volume.shape[1:], patch_zyx)
    image = volume[(slice(None), *region)]
    local = prompts.shifted([s.start for s in region])
    inputs = torch.cat([image, torch.from_numpy(guidance(local, image.shape[1:], spec))])
    return region, predict(net, inputs, patch_zyx, labels, cfg, device, on_windows, None if body is None else body[region])


@dataclass
class Result:
    """A prompted segmentation: the crop it ran on (z, y, x slices of the volume), its label map and
    probabilities there."""

    region: tuple[slice, slice, slice]
    label: np.ndarray
    probs: np.ndarray

    @property
    def start_xyz(self) -> list[int]:
        return [s.start for s in reversed(self.region)]

    @property
    def size_xyz(self) -> list[int]:
        return [s.stop - s.start for s in reversed(self.region)]

    def full(self, shape_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Label map (Z, Y, X) and probabilities (K, Z, Y, X) on the whole volume (zero outside the crop)."""
        label = np.zeros(tuple(shape_zyx), dtype=self.label.dtype)
        label[self.region] = self.label
        probs = np.zeros((self.probs.shape[0], *shape_zyx), dtype=np.float32)
        probs[(slice(None), *self.region)] = self.probs
        return label, probs


class PromptSession:
    """A promptable model and one volume, normalised once; each call segments from its prompts."""

    def __init__(self, segmenter: Segmenter, image: Image) -> None:
        card = segmenter.card
        if card.prompts is None:
            raise BadInput(card.path or "model.json", "is not a promptable model; it takes no points or box")
        self.segmenter, self.spec, self.geometry = segmenter, card.prompts, image.geometry
        config = segmenter.config
        self.volume = torch.from_numpy(np.ascontiguousarray(normalise_channels(image, config.modalities, config.normalisation)))
        self.body = body_mask(image.array)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.volume.shape[1:])  # type: ignore[return-value]

    def voxels(self, prompts: Prompts, where: str) -> VoxelPrompts:
        return to_voxels(prompts, self.geometry, where)

    def __call__(self, prompts: VoxelPrompts, inference: InferenceConfig | None = None,
                 on_windows: WindowsDone | None = None) -> Result:
        if not (prompts.positive or prompts.box is not None):
            raise BadInput("prompts", "a promptable model needs at least one positive point or a box")
        segmenter = self.segmenter
        cfg = inference or segmenter.config.inference
        region, probs = predict_prompted(segmenter.net, self.volume, prompts, self.spec, segmenter.config.patch_zyx,
                                         segmenter.labels, cfg, segmenter.device, on_windows, self.body)
        label = postprocess(segmenter.labels.to_label_map(probs), segmenter.labels, cfg, self.geometry.spacing)
        return Result(region, label, probs.numpy())
