"""Per-cube numpy reference generator in the style of Models Genesis (Zhou et al. 2019).

Why this exists: the batched torch pair generator in ``sarseg`` is benchmarked against
the way Models Genesis builds its training pairs, one cube at a time on the CPU with
numpy/scipy. This file is that baseline. It is written to be a *fair* comparison:
it follows the Models Genesis default recipe (flip -> local pixel shuffle ->
non-linear intensity -> in/out-painting, target = flipped clean cube) but avoids
gratuitous slowness (random numbers for the shuffle loop are drawn in bulk, an
identity resize is skipped).

It is a standalone script, not part of the ``sarseg`` package.

``benchmarks/proxy_vs_numpy.py`` runs it beside ``sarseg bench proxy`` on the same volumes.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
from scipy import ndimage

Shape3 = tuple[int, int, int]

DEFAULT_SIZE: Shape3 = (32, 64, 64)  # output cube (Z, Y, X)
SCALES: tuple[float, ...] = (0.5, 1.0, 2.0)  # crop extent relative to the output size: sarseg's default 32, 64, 128 mm at 1 mm

# Models Genesis default probabilities.
FLIP_RATE = 0.4
LOCAL_SHUFFLE_RATE = 0.5
NONLINEAR_RATE = 0.9
PAINT_RATE = 0.9
INPAINT_RATE = 0.2  # otherwise out-painting

LOCAL_SHUFFLE_ITERS = 10_000
BEZIER_POINTS = 100_000


# --------------------------------------------------------------------------- cropping


def crop_cube(
    volume: np.ndarray,
    size_zyx: Sequence[int] = DEFAULT_SIZE,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """Crop a random cube at one of three scales and resize it to ``size_zyx``.

    The multi-scale crop is what makes the task scale-aware: the same output
    size covers 0.5x, 1x or 2x as much anatomy. Returns ``(cube, scale_index)``.
    """
    rng = np.random.default_rng() if rng is None else rng
    out = tuple(int(s) for s in size_zyx)
    scale_idx = int(rng.integers(len(SCALES)))
    scale = SCALES[scale_idx]
    extent = tuple(
        int(min(max(round(o * scale), 1), v)) for o, v in zip(out, volume.shape)
    )
    start = [int(rng.integers(0, v - e + 1)) for v, e in zip(volume.shape, extent)]
    crop = volume[
        start[0] : start[0] + extent[0],
        start[1] : start[1] + extent[1],
        start[2] : start[2] + extent[2],
    ]
    if extent == out:  # identity resize: no need to interpolate
        return np.array(crop, dtype=np.float32, copy=True), scale_idx
    factors = [o / e for o, e in zip(out, extent)]
    cube = ndimage.zoom(crop.astype(np.float32, copy=False), factors, order=1)
    if cube.shape != out:  # guard against zoom's rounding of the output shape
        fixed = np.zeros(out, dtype=np.float32)
        sl = tuple(slice(0, min(a, b)) for a, b in zip(cube.shape, out))
        fixed[sl] = cube[sl]
        cube = fixed
    return cube.astype(np.float32, copy=False), scale_idx


# --------------------------------------------------------------------------- corruptions


def flip_pair(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    prob: float = FLIP_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly flip input and target together (same axes), up to 3 times.

    As in Models Genesis: while ``rng.random() < prob`` (at most 3 times) flip
    both along a random axis, so the restoration target stays aligned.
    """
    count = 3
    while count > 0 and rng.random() < prob:
        axis = int(rng.integers(3))
        x = np.flip(x, axis=axis)
        y = np.flip(y, axis=axis)
        count -= 1
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def local_pixel_shuffle(
    x: np.ndarray,
    rng: np.random.Generator,
    prob: float = LOCAL_SHUFFLE_RATE,
    iterations: int = LOCAL_SHUFFLE_ITERS,
) -> np.ndarray:
    """Shuffle voxels inside many small random blocks (destroys local texture).

    Blocks (side up to 1/10 of each dimension) are read from the original cube
    and written, permuted, into a copy, as Models Genesis does. Block sizes and
    positions are drawn in bulk; only the permutations happen in the loop.
    """
    if rng.random() >= prob:
        return x
    src = x
    out = x.copy()
    dims = np.array(x.shape)
    max_block = np.maximum(dims // 10, 1)
    sizes = rng.integers(1, max_block + 1, size=(iterations, 3))
    starts = rng.integers(0, dims - sizes + 1)
    for (bz, by, bx), (z0, y0, x0) in zip(sizes.tolist(), starts.tolist()):
        block = src[z0 : z0 + bz, y0 : y0 + by, x0 : x0 + bx]
        out[z0 : z0 + bz, y0 : y0 + by, x0 : x0 + bx] = rng.permutation(
            block.ravel()
        ).reshape(bz, by, bx)
    return out


def _bezier_curve(
    points: np.ndarray, n_times: int = BEZIER_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a Bezier curve through ``points`` (shape (n, 2)) with Bernstein polynomials."""
    n = len(points) - 1
    t = np.linspace(0.0, 1.0, n_times)
    # Bernstein basis B_{i,n}(t) = C(n, i) t^i (1 - t)^(n - i), i = 0..n
    basis = np.stack(
        [math.comb(n, i) * t**i * (1.0 - t) ** (n - i) for i in range(n + 1)]
    )
    return points[:, 0] @ basis, points[:, 1] @ basis


def nonlinear_transform(
    x: np.ndarray,
    rng: np.random.Generator,
    prob: float = NONLINEAR_RATE,
) -> np.ndarray:
    """Apply a random monotone-or-not cubic Bezier intensity mapping.

    End points (0,0) and (1,1), two random control points in [0,1]^2. Half the
    time only x is sorted (the mapping may be non-monotone, i.e. it can invert
    intensities), otherwise both x and y are sorted (monotone mapping).
    """
    if rng.random() >= prob:
        return x
    control = rng.random((2, 2))
    points = np.array([[0.0, 0.0], control[0], control[1], [1.0, 1.0]])
    xvals, yvals = _bezier_curve(points)
    if rng.random() < 0.5:  # x sorted against y in reverse: Genesis' decreasing (inverting) map
        xvals, yvals = np.sort(xvals), yvals[::-1]
    else:
        xvals, yvals = np.sort(xvals), np.sort(yvals)
    return np.interp(x, xvals, yvals).astype(np.float32, copy=False)


def in_painting(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fill up to 5 random boxes (sides 1/6..1/3 of the cube) with uniform noise.

    Continue rule as in Models Genesis: add another box while ``rng.random() < 0.95``.
    """
    x = x.copy()
    dims = x.shape
    count = 5
    while count > 0 and rng.random() < 0.95:
        size = [int(rng.integers(d // 6, d // 3 + 1)) for d in dims]
        start = [int(rng.integers(3, d - s - 3 + 1)) for d, s in zip(dims, size)]
        x[
            start[0] : start[0] + size[0],
            start[1] : start[1] + size[1],
            start[2] : start[2] + size[2],
        ] = rng.random(size, dtype=np.float32)
        count -= 1
    return x


def out_painting(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace the cube with uniform noise, then restore random boxes of the original.

    Box sides are 3/7..4/7 of the cube's. As in Models Genesis one box is always
    restored, then up to 4 more while ``rng.random() < 0.95``.
    """
    dims = x.shape
    out = rng.random(dims, dtype=np.float32)

    def restore() -> None:
        size = [d - int(rng.integers(3 * d // 7, 4 * d // 7 + 1)) for d in dims]
        start = [int(rng.integers(3, d - s - 3 + 1)) for d, s in zip(dims, size)]
        sl = tuple(slice(a, a + s) for a, s in zip(start, size))
        out[sl] = x[sl]

    restore()
    count = 4
    while count > 0 and rng.random() < 0.95:
        restore()
        count -= 1
    return out


def painting(
    x: np.ndarray,
    rng: np.random.Generator,
    prob: float = PAINT_RATE,
    inpaint_rate: float = INPAINT_RATE,
) -> np.ndarray:
    """With probability ``prob``, in-paint (``inpaint_rate``) or otherwise out-paint."""
    if rng.random() >= prob:
        return x
    if rng.random() < inpaint_rate:
        return in_painting(x, rng)
    return out_painting(x, rng)


# --------------------------------------------------------------------------- pairs


def generate_pair(
    volumes: Sequence[np.ndarray],
    rng: np.random.Generator,
    size_zyx: Sequence[int] = DEFAULT_SIZE,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Build one (corrupted input, clean target, scale index) training pair.

    Order follows Models Genesis: flip both -> local shuffle -> non-linear ->
    painting; the target is the flipped clean cube.
    """
    volume = volumes[int(rng.integers(len(volumes)))]
    cube, scale = crop_cube(volume, size_zyx, rng)
    x, y = flip_pair(cube, cube.copy(), rng)
    x = local_pixel_shuffle(x, rng)
    x = nonlinear_transform(x, rng)
    x = painting(x, rng)
    return x.astype(np.float32, copy=False), y, scale


def pairs_per_second(
    volumes: Sequence[np.ndarray], seconds: float, seed: int = 0
) -> dict:
    """Generate pairs for about ``seconds`` seconds and report throughput."""
    rng = np.random.default_rng(seed)
    n = 0
    t0 = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        generate_pair(volumes, rng)
        n += 1
        elapsed = time.perf_counter() - t0
    return {"cubes": n, "seconds": elapsed, "cubes_per_s": n / elapsed}
