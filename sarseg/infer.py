"""Segmentation: MONAI sliding-window inference (Gaussian blending, flip TTA, AMP on CUDA, stitching on
the CPU so large volumes fit), an optional region of interest, post-processing, and a label map on the
exact grid of the input; progress per batch of windows for a job's bar and ETA.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval
from scipy import ndimage

from .config import FinetuneConfig
from .core.card import InferenceConfig, ModelCard, read_card
from .core.errors import BadInput
from .core.labels import LabelScheme
from .core.progress import format_event
from .io import Geometry, Image, body_mask, normalisation_for
from .model import build_net, load_weights, net_config

WindowsDone = Callable[[int, int], None]
"""Told (windows done, windows in all, every TTA pass counted) before the first batch of windows and after each."""


def normalise_channels(image: Image, modalities: Sequence[str], table: dict) -> np.ndarray:
    """Each channel normalised by its modality's entry (the same rule in training and inference)."""
    if image.channels != len(modalities):
        raise BadInput(image.paths[0] if image.paths else "input",
                       f"has {image.channels} channel(s) but the model expects {len(modalities)} ({', '.join(modalities)})")
    return np.stack([normalisation_for(m, table)(c) for m, c in zip(modalities, image.array)])


def window_count(shape_zyx: Sequence[int], patch_zyx: Sequence[int], overlap: float) -> int:
    """How many windows ``sliding_window_inference`` runs over one volume of this shape: MONAI's own rule
    (its scan interval and patch slices), so the count is the one it iterates over."""
    size = tuple(max(int(s), int(p)) for s, p in zip(shape_zyx, patch_zyx))
    patch = tuple(int(p) for p in patch_zyx)
    return len(dense_patch_slices(size, patch, _get_scan_interval(size, patch, len(size), (overlap,) * len(size))))


@torch.no_grad()
def predict(
    net: torch.nn.Module,
    volume: torch.Tensor,
    patch_zyx: Sequence[int],
    labels: LabelScheme,
    cfg: InferenceConfig,
    device: torch.device,
    on_windows: WindowsDone | None = None,
    body: np.ndarray | None = None,
) -> torch.Tensor:
    """Probabilities (K, Z, Y, X) on the CPU for a normalised (C, Z, Y, X) volume.

    Patches run on ``device``; the blended output is stitched on the CPU, so a volume too large for the
    GPU still works. TTA averages the probabilities of the flips along each axis. Voxels outside ``body``
    (:func:`~sarseg.io.body_mask` of the raw image: the padding around a skull-stripped brain; None: no
    such voxels) are background: a patch of them alone is constant, and what a network says about a
    constant input is arbitrary. The mask comes from the raw image because z-scoring sets those voxels to
    the mean. ``on_windows`` follows the work: MONAI calls the predictor once per batch of windows, which
    counts them.
    """
    net.eval()
    amp = device.type == "cuda"
    shape = volume.shape[1:]
    pad = [max(0, p - s) for p, s in zip(patch_zyx, shape)]
    inputs = volume[None].float()
    padded = [s + p for s, p in zip(shape, pad)]
    total = (4 if cfg.tta else 1) * window_count(padded, patch_zyx, cfg.overlap)
    done, report = 0, on_windows or (lambda done, total: None)

    def predictor(patches: torch.Tensor) -> torch.Tensor:
        nonlocal done
        out = net(patches).float()
        done = min(total, done + patches.shape[0])
        report(done, total)
        return out

    def run(x: torch.Tensor) -> torch.Tensor:  # padded after any flip, so TTA's flips see the same volume
        if any(pad):
            x = torch.nn.functional.pad(x, [0, pad[2], 0, pad[1], 0, pad[0]], mode="replicate")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = sliding_window_inference(
                x, tuple(patch_zyx), cfg.sw_batch_size, predictor, overlap=cfg.overlap,
                mode="gaussian", sw_device=device, device=torch.device("cpu"),
            )
        return labels.activate(logits.float())[:, :, : shape[0], : shape[1], : shape[2]]

    report(0, total)
    probs = run(inputs)
    if cfg.tta:
        for axis in (2, 3, 4):
            probs += run(inputs.flip(axis)).flip(axis)
        probs /= 4
    probs = probs[0]
    if body is not None:
        outside = torch.from_numpy(~body)
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


def roi_box(geometry: Geometry, roi: Sequence[float], where: str = "--roi") -> tuple[slice, slice, slice]:
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
        raise BadInput(where, f"box {tuple(roi)} lies outside the image or between its voxel centres "
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

    def __call__(self, image: Image, roi: Sequence[float] | None = None, inference: InferenceConfig | None = None,
                 on_windows: WindowsDone | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Label map (Z, Y, X) and probabilities (K, Z, Y, X) on the input's grid (zero outside the ROI)."""
        cfg = inference or self.config.inference
        volume = normalise_channels(image, self.config.modalities, self.config.normalisation)
        region = roi_box(image.geometry, roi) if roi is not None else (slice(None),) * 3
        probs = predict(self.net, torch.from_numpy(np.ascontiguousarray(volume[(slice(None), *region)])),
                        self.config.patch_zyx, self.labels, cfg, self.device, on_windows, body_mask(image.array)[region])
        label = np.zeros(image.array.shape[1:], dtype=np.int16)
        label[region] = postprocess(self.labels.to_label_map(probs), self.labels, cfg, image.geometry.spacing)
        full = np.zeros((probs.shape[0], *image.array.shape[1:]), dtype=np.float32)
        full[(slice(None), *region)] = probs.numpy()
        return label, full



class SegmentProgress:
    """``sarseg segment --progress json``: the events a job's bar and ETA follow, one per stage and one per
    batch of windows, on stdout.

    The run counts units of work: reading the input (1; its size fixes the others, so ``start`` knows no
    total yet), each window of each TTA pass (1 each), post-processing and writing (1). The step only
    grows. The ETA is the windows left at the rate so far, plus writing, taken to last as long as reading
    did (the same grid, written instead of read).
    """

    def __init__(self, device: str, passes: int) -> None:
        self.passes = passes
        self.t0 = self.t_windows = time.monotonic()
        self.read_s, self.total = 0.0, 0
        self._emit("start", step=0, device=device, stage="reading")

    def windows(self, done: int, total: int) -> None:
        """A :data:`WindowsDone` callback: reading ended before the first call (done 0)."""
        now = time.monotonic()
        if done == 0:
            self.read_s, self.t_windows, self.total = now - self.t0, now, total
        eta = (now - self.t_windows) / done * (total - done) + self.read_s if done else None
        self._step(1 + done, "segmenting", eta, **{"pass": max(1, math.ceil(done * self.passes / total)),
                                                   "passes": self.passes})

    def writing(self) -> None:
        self._step(self.total + 1, "writing", self.read_s)

    def done(self, path: str) -> None:
        steps = self.total + 2
        self._emit("done", step=steps, steps=steps, path=path, elapsed_s=self._elapsed())

    def _step(self, step: int, stage: str, eta_s: float | None, **fields: Any) -> None:
        eta = {} if eta_s is None else {"eta_s": round(eta_s, 1)}
        self._emit("step", step=step, steps=self.total + 2, stage=stage, **fields, **eta, elapsed_s=self._elapsed())

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    @staticmethod
    def _emit(name: str, **fields: Any) -> None:
        print(format_event(name, **fields), flush=True)
