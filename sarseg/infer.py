"""Segmentation: MONAI sliding-window inference (Gaussian blending, flip TTA, AMP on CUDA, stitching on
the CPU so large volumes fit), an optional region of interest, post-processing, and a label map on the
exact grid of the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy import ndimage

from .config import FinetuneConfig
from .core.card import InferenceConfig, ModelCard, read_card
from .core.errors import BadInput
from .core.labels import LabelScheme
from .io import Geometry, Image, normalisation_for
from .model import build_net, load_weights, net_config


def normalise_channels(image: Image, modalities: Sequence[str], table: dict) -> np.ndarray:
    """Each channel normalised by its modality's entry (the same rule in training and inference)."""
    if image.channels != len(modalities):
        raise BadInput(image.paths[0] if image.paths else "input",
                       f"has {image.channels} channel(s) but the model expects {len(modalities)} ({', '.join(modalities)})")
    return np.stack([normalisation_for(m, table)(c) for m, c in zip(modalities, image.array)])


@torch.no_grad()
def predict(
    net: torch.nn.Module,
    volume: torch.Tensor,
    patch_zyx: Sequence[int],
    labels: LabelScheme,
    cfg: InferenceConfig,
    device: torch.device,
) -> torch.Tensor:
    """Probabilities (K, Z, Y, X) on the CPU for a normalised (C, Z, Y, X) volume.

    Patches run on ``device``; the blended output is stitched on the CPU, so a volume too large for the
    GPU still works. TTA averages the probabilities of the flips along each axis. Voxels where every
    channel is at its minimum (the padding around a skull-stripped brain) are background: a patch of
    them alone is constant, and what a network says about a constant input is arbitrary.
    """
    net.eval()
    amp = device.type == "cuda"
    shape = volume.shape[1:]
    pad = [max(0, p - s) for p, s in zip(patch_zyx, shape)]
    inputs = volume[None].float()

    def run(x: torch.Tensor) -> torch.Tensor:  # padded after any flip, so TTA's flips see the same volume
        if any(pad):
            x = torch.nn.functional.pad(x, [0, pad[2], 0, pad[1], 0, pad[0]], mode="replicate")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = sliding_window_inference(
                x, tuple(patch_zyx), cfg.sw_batch_size, lambda p: net(p).float(), overlap=cfg.overlap,
                mode="gaussian", sw_device=device, device=torch.device("cpu"),
            )
        return labels.activate(logits.float())[:, :, : shape[0], : shape[1], : shape[2]]

    probs = run(inputs)
    if cfg.tta:
        for axis in (2, 3, 4):
            probs += run(inputs.flip(axis)).flip(axis)
        probs /= 4
    probs = probs[0]
    outside = (volume == volume.amin(dim=(1, 2, 3), keepdim=True)).all(0)  # no channel above its minimum: padding, air
    probs[:, outside] = 0.0
    if labels.mode == "classes":
        probs[0, outside] = 1.0  # background
    return probs


def postprocess(label: np.ndarray, labels: LabelScheme, cfg: InferenceConfig, spacing_xyz: Sequence[float]) -> np.ndarray:
    """Hole filling, largest connected component and minimum component size, on the segmented voxels
    as a whole (scipy.ndimage: MONAI's versions of these need scikit-image)."""
    fg = label > 0
    if not fg.any() or not (cfg.largest_component or cfg.min_size_mm3 > 0 or cfg.fill_holes):
        return label
    out = label.copy()
    if cfg.fill_holes:
        for value in labels.paint:
            out[ndimage.binary_fill_holes(out == value) & (out == 0)] = value
        fg = out > 0
    components, count = ndimage.label(fg)
    sizes = np.bincount(components.ravel())[1:]
    keep = np.ones(count, dtype=bool)
    if cfg.min_size_mm3 > 0:
        keep &= sizes * float(np.prod(spacing_xyz)) >= cfg.min_size_mm3
    if cfg.largest_component and count:
        keep &= np.arange(count) == int(np.argmax(sizes))
    out[~np.concatenate([[True], keep])[components]] = 0
    return out


def roi_box(geometry: Geometry, roi: Sequence[float]) -> tuple[slice, slice, slice]:
    """Voxel slices (z, y, x) of the voxels whose centres lie in a physical box (x0 y0 z0 x1 y1 z1, LPS mm
    like SimpleITK; a voxel's physical point is its centre)."""
    import SimpleITK as sitk

    reference = geometry.apply_to(sitk.Image([int(s) for s in geometry.size], sitk.sitkUInt8))
    corners = [(x, y, z) for x in (roi[0], roi[3]) for y in (roi[1], roi[4]) for z in (roi[2], roi[5])]
    index = np.array([reference.TransformPhysicalPointToContinuousIndex(c) for c in corners])
    eps = 1e-6  # a box edge on a voxel centre keeps that voxel despite rounding
    low = np.clip(np.ceil(index.min(0) - eps).astype(int), 0, None)
    high = np.minimum(np.floor(index.max(0) + eps).astype(int) + 1, geometry.size)
    if np.any(high <= low):
        raise BadInput("--roi", f"box {tuple(roi)} lies outside the image or between its voxel centres "
                                f"(extent {geometry.extent_mm} mm)")
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1]))


@dataclass
class Segmenter:
    """A loaded segmentation model: the network its card describes, with its weights."""

    net: torch.nn.Module
    card: ModelCard
    config: FinetuneConfig
    device: torch.device

    @property
    def labels(self) -> LabelScheme:
        return self.config.labels

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> "Segmenter":
        card = read_card(folder)
        card.require_kind("segmentation", "segmentation")
        card.need("architecture", "patch_size", "normalisation", purpose="segment with it")
        state = load_weights(card)  # checked against the card's architecture
        net = build_net(card)
        net.load_state_dict(state)
        config = FinetuneConfig(net=net_config(card), patch_size=card.patch_size, labels=card.labels,
                                modalities=card.modalities, normalisation=card.normalisation,
                                inference=card.inference or InferenceConfig())
        return cls(net.to(device).eval(), card, config, device)

    def __call__(self, image: Image, roi: Sequence[float] | None = None, inference: InferenceConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Label map (Z, Y, X) and probabilities (K, Z, Y, X) on the input's grid (zero outside the ROI)."""
        cfg = inference or self.config.inference
        volume = normalise_channels(image, self.config.modalities, self.config.normalisation)
        region = roi_box(image.geometry, roi) if roi is not None else (slice(None),) * 3
        probs = predict(self.net, torch.from_numpy(np.ascontiguousarray(volume[(slice(None), *region)])),
                        self.config.patch_zyx, self.labels, cfg, self.device)
        label = np.zeros(image.array.shape[1:], dtype=np.int16)
        label[region] = postprocess(self.labels.to_label_map(probs), self.labels, cfg, image.geometry.spacing)
        full = np.zeros((probs.shape[0], *image.array.shape[1:]), dtype=np.float32)
        full[(slice(None), *region)] = probs.numpy()
        return label, full

