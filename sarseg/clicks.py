"""Prompts on a voxel grid: the guidance channels a promptable network reads beside the image, and
simulated prompts for training and benchmarks, as DeepGrow and DeepEdit simulate them: a first click
inside the lesion (or a box around it), then corrective clicks in the largest error region, positive
where the prediction missed lesion and negative where it marked too much.

The click maps are MONAI deepgrow's (``AddGuidanceSignald``: a Gaussian of ``sigma`` voxels at each
click, cut at 4 sigma along each axis, the channel scaled to peak 1), drawn only around each click:
MONAI convolves the whole grid, 0.35 s per channel of a 64x128x128 crop on one core here, most of a
worker's second. The box channel is 1 inside the box. A click is placed at the voxel deepest
inside its region (the largest distance to the region's edge, in mm when the spacing is given), as
interactive benchmarks place it; a random click (training) is drawn with weights growing with that
depth, so it falls inside the region but not always at its centre (default chosen here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage, special

from .core.card import PromptSpec

Voxel = tuple[int, int, int]  # z, y, x


@dataclass(frozen=True)
class VoxelPrompts:
    """Clicks as (z, y, x) voxel indices and the box as (z0, y0, x0, z1, y1, x1), ends exclusive."""

    positive: tuple[Voxel, ...] = ()
    negative: tuple[Voxel, ...] = ()
    box: tuple[int, int, int, int, int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.positive or self.negative or self.box is not None)

    def add(self, voxel: Sequence[int], positive: bool) -> "VoxelPrompts":
        click = (tuple(int(v) for v in voxel),)
        return replace(self, positive=self.positive + click) if positive else replace(self, negative=self.negative + click)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and one past the highest voxel (z, y, x) of the positive clicks and the box: where the
        lesion is said to be. Negative clicks only say where it is not, so they do not widen what is
        segmented (a negative click outside it is already obeyed)."""
        points = [np.array(p) for p in self.positive]
        if self.box is not None:
            points += [np.array(self.box[:3]), np.array(self.box[3:]) - 1]
        stacked = np.stack(points)
        return stacked.min(0), stacked.max(0) + 1

    def shifted(self, start: Sequence[int]) -> "VoxelPrompts":
        """The same prompts on a crop whose first voxel is ``start`` (z, y, x)."""
        offset = np.asarray(start, dtype=int)

        def move(points: tuple[Voxel, ...]) -> tuple[Voxel, ...]:
            return tuple(tuple(int(v) for v in np.asarray(p) - offset) for p in points)  # type: ignore[misc]

        box = None if self.box is None else tuple(int(v) for v in np.asarray(self.box) - np.tile(offset, 2))
        return VoxelPrompts(move(self.positive), move(self.negative), box)  # type: ignore[arg-type]


def click_map(points: Sequence[Voxel], shape: Sequence[int], sigma: float) -> np.ndarray:
    """MONAI deepgrow's click channel, (Z, Y, X) float32: the sum of a Gaussian at each click (integrated
    over each voxel, as MONAI's kernel), cut at 4 sigma along each axis, scaled to peak 1 (MONAI also subtracts the channel's minimum, which is 0 on
    any grid wider than the clicks' reach). Clicks outside the grid are left out (MONAI would move them
    onto its border)."""
    out = np.zeros(tuple(int(s) for s in shape), dtype=np.float32)
    radius = int(max(4.0 * sigma, 0.5) + 0.5)
    edges = np.arange(-radius - 0.5, radius + 1.0) / (sigma * math.sqrt(2.0))
    weights = np.diff(special.erf(edges)) / 2  # MONAI's kernel: the Gaussian integrated over each voxel
    for point in points:
        if not all(0 <= v < n for v, n in zip(point, out.shape)):
            continue
        spans = [(max(0, v - radius), min(n, v + radius + 1)) for v, n in zip(point, out.shape)]
        gz, gy, gx = (weights[lo - v + radius:hi - v + radius] for (lo, hi), v in zip(spans, point))
        out[tuple(slice(lo, hi) for lo, hi in spans)] += (gz[:, None, None] * gy[None, :, None] * gx[None, None, :]).astype(np.float32)
    peak = out.max()
    return out / peak if peak > 0 else out


def guidance(prompts: VoxelPrompts, shape: Sequence[int], spec: PromptSpec) -> np.ndarray:
    """The guidance channels (P, Z, Y, X) of ``spec.channels`` on a grid of ``shape``."""
    clicks = {"positive": prompts.positive, "negative": prompts.negative}
    out = np.zeros((len(spec.channels), *(int(s) for s in shape)), dtype=np.float32)
    for i, name in enumerate(spec.channels):
        if name != "box":
            out[i] = click_map(clicks[name], shape, spec.sigma)
        elif prompts.box is not None:
            z0, y0, x0, z1, y1, x1 = (max(0, v) for v in prompts.box)
            out[i, z0:z1, y0:y1, x0:x1] = 1.0
    return out


def click_in(region: np.ndarray, spacing: Sequence[float] | None = None, rng: np.random.Generator | None = None) -> Voxel:
    """A voxel of the (non-empty) boolean ``region``: the one deepest inside it, or with ``rng`` one drawn
    with weights growing with its depth. The array's border counts as the region's edge."""
    box = ndimage.find_objects(region.astype(np.int8))[0]  # the distance map only of the region's bounding box
    inner = np.pad(region[box], 1)
    depth = ndimage.distance_transform_edt(inner, sampling=spacing)[1:-1, 1:-1, 1:-1]
    if rng is None:
        index = int(np.argmax(depth))
    else:
        weights = depth.ravel()
        index = int(rng.choice(weights.size, p=weights / weights.sum()))
    local = np.unravel_index(index, depth.shape)
    return tuple(int(s.start + v) for s, v in zip(box, local))  # type: ignore[return-value]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of a boolean mask (the mask itself when it has one or none)."""
    components, count = ndimage.label(mask)
    if count <= 1:
        return mask.astype(bool)
    return components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))


def correction(target: np.ndarray, prediction: np.ndarray, spacing: Sequence[float] | None = None,
               rng: np.random.Generator | None = None) -> tuple[Voxel, bool] | None:
    """The next corrective click, and whether it is positive: in the largest connected error region
    (missed lesion, or marked background; a tie goes to the missed lesion); None when there is no error."""
    best: tuple[int, bool, np.ndarray] | None = None
    for positive, error in ((True, target & ~prediction), (False, prediction & ~target)):
        components, count = ndimage.label(error)
        if count:
            sizes = np.bincount(components.ravel())[1:]
            if best is None or sizes.max() > best[0]:
                best = (int(sizes.max()), positive, components == 1 + int(np.argmax(sizes)))
    return None if best is None else (click_in(best[2], spacing, rng), best[1])


def box_around(region: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0) -> tuple[int, ...]:
    """The bounding box (z0, y0, x0, z1, y1, x1) of a non-empty region; with ``rng`` each side moved by up
    to ``jitter`` of the region's extent along it (at least one voxel), kept on the grid and non-empty."""
    box = ndimage.find_objects(region.astype(np.int8))[0]
    low, high = np.array([s.start for s in box]), np.array([s.stop for s in box])
    if rng is not None:
        reach = np.maximum(1, np.round(jitter * (high - low))).astype(int)
        low = low + rng.integers(-reach, reach + 1)
        high = high + rng.integers(-reach, reach + 1)
    low = np.clip(low, 0, np.array(region.shape) - 1)
    high = np.clip(np.maximum(high, low + 1), 1, region.shape)
    return (*(int(v) for v in low), *(int(v) for v in high))


def first_prompt(lesion: np.ndarray, rng: np.random.Generator, box_probability: float, jitter: float) -> VoxelPrompts:
    """A training sample's first prompt: a jittered box around the lesion (``box_probability``), else a
    click inside it; none for a patch without lesion."""
    if not lesion.any():
        return VoxelPrompts()
    if rng.random() < box_probability:
        return VoxelPrompts(box=box_around(lesion, rng, jitter))  # type: ignore[arg-type]
    return VoxelPrompts(positive=(click_in(lesion, rng=rng),))


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(prediction.sum()) + int(target.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & target).sum()) / total


@dataclass
class Simulation:
    """What :func:`simulate` found: the Dice after each prompt and the prompts given."""

    dice: list[float] = field(default_factory=list)
    prompts: VoxelPrompts = field(default_factory=VoxelPrompts)

    def clicks_to(self, threshold: float) -> int | None:
        """How many prompts it took to reach ``threshold`` Dice (None: not within those simulated)."""
        return next((i + 1 for i, d in enumerate(self.dice) if d >= threshold), None)


def simulate(segment: Callable[[VoxelPrompts], np.ndarray], target: np.ndarray, clicks: int,
             spacing: Sequence[float] | None = None, box: bool = False) -> Simulation:
    """Deterministic interaction with a promptable model, as interactive benchmarks score it: the first
    prompt a click at the centre of the target's largest part (or its bounding box, with ``box``), then
    ``clicks - 1`` corrective clicks, each at the centre of the largest error region of the prediction
    so far. ``segment`` maps prompts to a boolean mask of ``target``'s shape. A perfect prediction keeps
    its Dice for the clicks left."""
    part = largest_component(target)
    prompts = VoxelPrompts(box=box_around(part)) if box else VoxelPrompts(positive=(click_in(part, spacing),))  # type: ignore[arg-type]
    result = Simulation(prompts=prompts)
    while len(result.dice) < clicks:
        prediction = segment(result.prompts)
        result.dice.append(dice(prediction, target))
        fix = correction(target, prediction, spacing) if len(result.dice) < clicks else None
        if fix is None:
            result.dice += [result.dice[-1]] * (clicks - len(result.dice))
            break
        result.prompts = result.prompts.add(*fix)
    return result
