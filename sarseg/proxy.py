"""SAR's proxy task as batched tensor operations (CPU and CUDA alike, no per-cube Python loops).

Multi-scale cubes are gathered from per-scale views of each volume, one ``index_select`` per scale,
and resized where they must grow by three small matrix products; the Models Genesis corruptions (flips,
local pixel shuffling, Bezier non-linear intensity, in-/out-painting) act on whole batches, in place on
runs of cubes. Tensors are (B, C, Z, Y, X); a cube's intensity range is per cube and channel, and every
corruption keeps values inside it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ProxyConfig


def scale_extents_mm(cfg: ProxyConfig, extent_zyx_mm: torch.Tensor) -> torch.Tensor:
    """Physical cube size (K, 3) in z, y, x for each scale; the cube keeps the input size's aspect ratio."""
    z, y, x = cfg.size_zyx
    aspect = torch.tensor([z / x, y / x, 1.0], dtype=torch.float64)
    sizes = torch.tensor(cfg.scales, dtype=torch.float64)
    if cfg.scale_unit == "fraction":
        sizes = sizes * float((extent_zyx_mm.double() / aspect).min())
    return sizes[:, None] * aspect[None, :]


def fitting_scales(cfg: ProxyConfig, spacing_zyx: torch.Tensor, shape_zyx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cube extents in voxels (K, 3) for one volume and which scales fit inside it (K,)."""
    extent_mm = shape_zyx.double() * spacing_zyx.double()
    extents = scale_extents_mm(cfg, extent_mm) / spacing_zyx.double()[None, :]
    fits = (extents <= shape_zyx.double()[None, :] + 1e-6).all(dim=1)
    return extents.float(), fits


def foreground_coordinates(volume: torch.Tensor, threshold: float, limit: int = 50_000, seed: int = 0,
                           body: torch.Tensor | None = None) -> torch.Tensor:
    """Voxel indices (N, 3) of the first channel above ``threshold`` of its p0.5..p99.5 range, and inside
    ``body`` (Z, Y, X; from the raw volume, :func:`~sarseg.io.body_mask`) when given: a normalisation that
    puts the air at 0, the brain's mean, would otherwise pass it as foreground.

    Cube centres are drawn from these, so no cube is pure air; at most ``limit`` are kept to bound memory.
    """
    first = volume[0]
    sample = first.flatten()[:: max(1, first.numel() // 200_000)].float()
    low, high = torch.quantile(sample, torch.tensor([0.005, 0.995], dtype=sample.dtype, device=sample.device))
    above = first > low + threshold * (high - low)
    coords = torch.nonzero(above if body is None else above & body.to(above.device))
    if len(coords) == 0:
        coords = torch.nonzero(first >= first.max())
    if len(coords) > limit:
        pick = torch.randperm(len(coords), generator=torch.Generator().manual_seed(seed))[:limit]
        coords = coords[pick]
    return coords


@dataclass
class ScaleView:
    """One volume prepared for one scale: shrunk (area-averaged) where the cube is larger than the input
    size, so a cube is a plain crop of ``crop`` voxels, resized only when it must grow."""

    volume: torch.Tensor  # (C, Z', Y', X')
    windows: torch.Tensor  # strided view (C, Z'-cz+1, Y'-cy+1, X'-cx+1, cz, cy, cx), no copy
    factor: torch.Tensor  # (3,) original voxel -> this view's voxel
    crop: tuple[int, int, int]


def scale_views(volume: torch.Tensor, extents: torch.Tensor, fits: torch.Tensor, size_zyx: tuple[int, int, int]) -> list[ScaleView | None]:
    """Per scale, the volume resampled so cropping needs no per-batch downsampling (None: scale does not fit)."""
    shape = volume.shape[1:]
    views: list[ScaleView | None] = []
    for extent, fit in zip(extents.tolist(), fits.tolist()):
        if not fit:
            views.append(None)
            continue
        new_shape = [max(1, round(s * out / e)) if e > out else s for s, e, out in zip(shape, extent, size_zyx)]
        crop = tuple(min(out, n) if e > out else min(max(1, round(e)), n) for e, out, n in zip(extent, size_zyx, new_shape))
        view = volume if list(new_shape) == list(shape) else F.interpolate(volume[None], size=new_shape, mode="area")[0]
        windows = view.unfold(1, crop[0], 1).unfold(2, crop[1], 1).unfold(3, crop[2], 1)
        factor = torch.tensor([n / s for n, s in zip(new_shape, shape)], device=volume.device)
        views.append(ScaleView(view, windows, factor, crop))
    return views


def sample_cubes(
    views: list[ScaleView | None],
    foreground: torch.Tensor,
    n: int,
    size_zyx: tuple[int, int, int],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n cubes from one volume at random fitting scales, each holding a foreground voxel where it can;
    returns (cubes (n, C, *size_zyx), scale labels (n,)), the cubes grouped by scale (so each scale's
    cubes are one slice, written in place). One gather and at most one resize per scale."""
    device = foreground.device
    fits = torch.tensor([v is not None for v in views], dtype=torch.float32, device=device)
    labels = torch.multinomial(fits, n, replacement=True, generator=generator)
    centres = foreground[torch.randint(len(foreground), (n,), device=device, generator=generator)].float() + 0.5
    labels, order = labels.sort(stable=True)
    centres = centres[order]
    channels = next(v for v in views if v is not None).volume.shape[0]
    cubes = torch.empty((n, channels, *size_zyx), device=device)
    a = 0
    for view, count in zip(views, torch.bincount(labels, minlength=len(views)).tolist()):
        if count == 0:
            continue
        crop = torch.tensor(view.crop, device=device)
        limit = torch.tensor(view.windows.shape[1:4], device=device) - 1
        start = torch.round(centres[a : a + count] * view.factor - crop / 2).long().clamp_min(0)
        start = torch.minimum(start, limit)
        if view.crop == tuple(size_zyx):
            _crops(view, start, out=cubes[a : a + count])
        else:
            _resize(_crops(view, start), cubes[a : a + count])
        a += count
    return cubes, labels


def _crops(view: ScaleView, start: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(n, C, *crop) cubes at voxel starts (n, 3): one ``index_select`` over every window of the view
    (an overlapping strided view, no copy), 2-3x faster than indexing ``windows`` on three axes."""
    volume, strides = view.volume, view.volume.stride()
    last = sum((n - 1) * s for n, s in zip(view.windows.shape[1:4], strides[1:]))
    every = volume.as_strided((last + 1, volume.shape[0], *view.crop), (1, *strides))
    return torch.index_select(every, 0, (start * torch.tensor(strides[1:], device=start.device)).sum(dim=1), out=out)


def _resize(part: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Trilinear resize (align_corners=False) of (n, C, *crop) into ``out`` (n, C, *size), one axis at a
    time as matrix products: 3-4x faster on CPU than ``interpolate`` for the few cubes of one volume and scale."""
    (n, c, z, y, x), (sz, sy, sx) = part.shape, out.shape[2:]
    weights = functools.partial(_linear_weights, dtype=part.dtype, device=part.device)
    part = part if x == sx else part @ weights(x, sx)
    part = part if y == sy else weights(y, sy).T @ part
    if z == sz:
        return out.copy_(part)
    return torch.matmul(weights(z, sz).T, part.reshape(n * c, z, sy * sx), out=out.view(n * c, sz, sy * sx)).view(out.shape)


@functools.lru_cache(maxsize=64)
def _linear_weights(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n_in, n_out) weights of ``interpolate``'s linear resize (each column a target voxel), taken
    from ``interpolate`` itself so the separable product equals its trilinear resize."""
    eye = torch.eye(n_in, dtype=dtype, device=device)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0]


# ---------------------------------------------------------------- corruptions


def _range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per cube and channel minimum and maximum, shaped to broadcast over (B, C, Z, Y, X)."""
    flat = x.flatten(2)
    return flat.amin(dim=2)[..., None, None, None], flat.amax(dim=2)[..., None, None, None]


def random_flips(x: torch.Tensor, y: torch.Tensor, rate: float, generator: torch.Generator) -> None:
    """Genesis' flips, in place on input and target alike: up to 3 tries, each going on with ``rate``."""
    parity = _flip_parity(x.shape[0], rate, generator, x.device)
    _flip(x, parity)
    _flip(y, parity)


def _flip_parity(b: int, rate: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(b, 3): whether each cube ends up flipped along z, y, x."""
    going = torch.ones(b, dtype=torch.bool, device=device)
    parity = torch.zeros(b, 3, dtype=torch.bool, device=device)
    for _ in range(3):
        going &= torch.rand(b, device=device, generator=generator) < rate
        axis = torch.randint(3, (b,), device=device, generator=generator)
        parity ^= going[:, None] & (axis[:, None] == torch.arange(3, device=device)[None, :])
    return parity


def _flip(x: torch.Tensor, parity: torch.Tensor) -> None:
    """Flip cubes in place, one gather and one scatter per set of axes that occurs."""
    code = (parity * torch.tensor([1, 2, 4], device=x.device)).sum(dim=1)
    for c in code.unique().tolist():
        if c:
            idx = torch.nonzero(code == c).flatten()
            x.index_copy_(0, idx, x.index_select(0, idx).flip([a + 2 for a in range(3) if c >> a & 1]))


def shuffle_index(spatial: tuple[int, ...], max_block: float, coverage: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A flat voxel index (Z*Y*X,) that permutes voxels inside small blocks.

    Block sides are drawn up to ``max_block`` of the cube's; the block grid gets a random offset; each
    block is shuffled with probability ``coverage``, with one of 64 random permutations.
    """
    block = [int(torch.randint(1, max(2, int(s * max_block)) + 1, (1,), generator=generator, device=device)) for s in spatial]
    if math.prod(block) < 2:
        block[-1] = 2
    offset = [int(torch.randint(0, b, (1,), generator=generator, device=device)) for b in block]
    count = [(s - o) // b for s, o, b in zip(spatial, offset, block)]
    flat = torch.arange(math.prod(spatial), device=device).reshape(spatial)
    region = tuple(slice(o, o + n * b) for o, n, b in zip(offset, count, block))
    (nz, ny, nx), (bz, by, bx) = count, block
    blocks = flat[region].reshape(nz, bz, ny, by, nx, bx).permute(0, 2, 4, 1, 3, 5).reshape(nz * ny * nx, -1)
    size = blocks.shape[1]
    perms = torch.rand(64, size, device=device, generator=generator).argsort(dim=1)
    perms = torch.cat([torch.arange(size, device=device)[None], perms])  # row 0: left as it is
    choice = torch.randint(1, 65, (blocks.shape[0],), device=device, generator=generator)
    choice = torch.where(torch.rand(choice.shape, device=device, generator=generator) < coverage, choice, 0)
    shuffled = blocks.gather(1, perms[choice])
    flat[region] = shuffled.reshape(nz, ny, nx, bz, by, bx).permute(0, 3, 1, 4, 2, 5).reshape(flat[region].shape)
    return flat.flatten()


def local_pixel_shuffle(x: torch.Tensor, max_block: float, coverage: float, generator: torch.Generator) -> torch.Tensor:
    """Genesis' local pixel shuffling as one gather: the cubes of a call share one block pattern, every
    channel alike (a fresh pattern each call, so nothing learnable is shared across batches)."""
    return _shuffled(x, shuffle_index(tuple(x.shape[2:]), max_block, coverage, generator, x.device))


def _shuffled(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Every channel of every cube through one flat voxel ``index`` (into ``out`` if given)."""
    rows = None if out is None else out.view(-1, len(index))
    return torch.index_select(x.reshape(-1, len(index)), 1, index, out=rows).view(x.shape)


def bezier_lut(n: int, generator: torch.Generator, device: torch.device, points: int = 256, bins: int = 4096) -> torch.Tensor:
    """Per-cube lookup tables (n, bins) of Genesis' random cubic Bezier intensity maps, each entry the
    curve at the centre of one of ``bins`` equal bins of [0, 1]."""
    t = torch.linspace(0.0, 1.0, points, device=device)
    basis = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # (4, points)
    control = torch.rand(n, 2, 2, device=device, generator=generator)  # two random control points (x, y)
    px = torch.cat([torch.zeros(n, 1, device=device), control[:, :, 0], torch.ones(n, 1, device=device)], dim=1)
    py = torch.cat([torch.zeros(n, 1, device=device), control[:, :, 1], torch.ones(n, 1, device=device)], dim=1)
    xs, ys = px @ basis, py @ basis  # (n, points)
    xs = xs.sort(dim=1).values
    both = torch.rand(n, 1, device=device, generator=generator) < 0.5
    # Genesis: sort x and y (an increasing map), or sort x only against y in reverse order (a
    # decreasing map that inverts intensities: Genesis builds its curve from t = 1 down to 0)
    ys = torch.where(both, ys.sort(dim=1).values, ys.flip(1))
    grid = (torch.arange(bins, device=device) + 0.5) / bins
    # hi = searchsorted(xs, grid): the number of xs below each grid value, counted the cheap way round
    # (where each of the few xs falls among the many grid values)
    below = torch.zeros(n, bins + 1, dtype=torch.long, device=device)
    below.scatter_add_(1, torch.searchsorted(grid, xs, right=True), torch.ones_like(xs, dtype=torch.long))
    hi = below.cumsum(dim=1)[:, :bins].clamp(1, points - 1)
    x0, x1 = xs.gather(1, hi - 1), xs.gather(1, hi)
    y0, y1 = ys.gather(1, hi - 1), ys.gather(1, hi)
    w = ((grid - x0) / (x1 - x0).clamp_min(1e-8)).clamp(0.0, 1.0)
    return y0 + w * (y1 - y0)


def nonlinear_intensity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Map each cube's intensities (rescaled to [0, 1] per channel) through its own Bezier curve
    (a 4096-bin table: each value mapped as if moved by at most 1/8192 of the range)."""
    return _lut_map_(x.clone(), bezier_lut(x.shape[0], generator, x.device), *_range(x))


def _lut_map_(x: torch.Tensor, lut: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """x (contiguous) through per-cube tables on [0, 1] in place, each channel's range [low, high] cut into
    the table's bins; one lookup in all the tables at once, already in each channel's units."""
    b, c = x.shape[:2]
    bins = lut.shape[1]
    low, high = low.view(b, c, 1), high.view(b, c, 1)
    table = torch.addcmul(low, lut[:, None, :], high - low).flatten()  # (b * c * bins)
    scale = bins * (1 - 2**-20) / (high - low).clamp_min(1e-8)  # high itself falls just inside the last bin
    index = x.view(b, c, -1).sub_(low).mul_(scale).int()  # each value's bin (x - low >= 0: truncation is floor)
    index += torch.arange(0, b * c * bins, bins, dtype=torch.int32, device=x.device).view(b, c, 1)
    return torch.index_select(table, 0, index.flatten(), out=x.view(-1)).view(x.shape)


def paint_mask(
    inpaint: torch.Tensor,
    spatial: tuple[int, ...],
    generator: torch.Generator,
    margin: int = 3,
    boxes: int = 5,
) -> torch.Tensor:
    """(m, 1, Z, Y, X) voxels to replace by noise: in-painting holes (up to 5 boxes, sides 1/6..1/3), or
    everything outside out-painting windows (up to 5 boxes, sides 3/7..4/7, the first always kept).
    Like Genesis, boxes keep being added while a 0.95 coin says so."""
    return _paint_bytes(inpaint, spatial, generator, margin, boxes).bool()


def _paint_bytes(inpaint: torch.Tensor, spatial: tuple[int, ...], generator: torch.Generator, margin: int = 3, boxes: int = 5) -> torch.Tensor:
    """``paint_mask`` as uint8 0 / 1: one bit per kept box in a code over (z, y) and one over x; a voxel
    is inside a box where the two codes share a bit (byte-wide operations: 3x faster than float ones)."""
    m, device = len(inpaint), inpaint.device
    keep = torch.rand(m, boxes, device=device, generator=generator) < 0.95
    keep[:, 0] |= ~inpaint
    keep = keep.cumprod(dim=1).bool()
    lo_frac = torch.where(inpaint, 1 / 6, 3 / 7)[:, None]
    hi_frac = torch.where(inpaint, 1 / 3, 4 / 7)[:, None]
    hits = []
    for s in spatial:
        lo, hi = (s * lo_frac).floor().clamp_min(1), (s * hi_frac).floor().clamp_min(1)
        length = (lo + torch.rand(m, boxes, device=device, generator=generator) * (hi - lo + 1)).floor().clamp(max=hi)
        room = (s - length - 2 * margin).clamp_min(0)
        start = (margin + (torch.rand(m, boxes, device=device, generator=generator) * (room + 1)).floor()).clamp(max=s - length)
        coord = torch.arange(s, device=device)[None, None]
        hits.append((coord >= start[..., None]) & (coord < (start + length)[..., None]))  # (m, boxes, s)
    hz, hy, hx = hits
    weights = (2 ** torch.arange(boxes, device=device)) * keep  # one bit per kept box
    weights = weights.float()  # sums of at most 31: exact in float, and CUDA has no integer einsum
    code_zy = torch.einsum("mkz,mky,mk->mzy", hz.float(), hy.float(), weights).to(torch.uint8)  # boxes covering (z, y)
    code_x = torch.einsum("mkx,mk->mx", hx.float(), weights).to(torch.uint8)  # boxes covering x
    inside = (code_zy[..., None] & code_x[:, None, None, :]).clamp_max_(1)
    return inside.bitwise_xor_((~inpaint).to(torch.uint8)[:, None, None, None])[:, None]


def paint(x: torch.Tensor, inpaint: torch.Tensor, generator: torch.Generator, bank: int = 8) -> torch.Tensor:
    """Genesis in-/out-painting; the noise is uniform in each cube's own range.

    Noise comes from ``bank`` fresh random cubes per call, each cube taking one (drawing it voxel by
    voxel for every cube made the random generator the slowest part of the proxy task on CPU).
    """
    return _paint_(x.clone(), *_range(x), inpaint, generator, bank)


def _paint_(
    x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, inpaint: torch.Tensor, generator: torch.Generator,
    bank: int = 8, rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """``paint`` in place, for cubes whose range is known; cube i takes the draws of row ``rows[i]``
    (default: row i). ``lerp`` with 0/1 weights picks exactly x or noise."""
    m = len(inpaint)
    noise = torch.rand((min(m, bank), *x.shape[1:]), device=x.device, generator=generator)
    choice = torch.randint(len(noise), (m,), device=x.device, generator=generator)
    mask = _paint_bytes(inpaint, tuple(x.shape[2:]), generator)
    if rows is not None:
        choice, mask = choice[rows], mask.index_select(0, rows)
    return x.lerp_(noise.index_select(0, choice).mul_(high - low).add_(low), mask.to(x.dtype))


@dataclass
class ProxyBatch:
    """One batch of the proxy task: corrupted inputs, clean targets, scale labels, source labels."""

    inputs: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    sources: torch.Tensor


def corrupt(cubes: torch.Tensor, cfg: ProxyConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Models Genesis order: flips (input and target) -> local shuffle -> non-linear -> painting.

    The inputs are built in an order of the cubes where each corruption's cubes lie in one or two runs,
    so every step works in place on slices (no gather and scatter per step); one gather restores the
    order at the end. Returns (inputs, targets); ``cubes`` is left untouched.
    """
    b, dev = cubes.shape[0], cubes.device
    targets = cubes.clone()
    _flip(targets, _flip_parity(b, cfg.flip_rate, generator, dev))
    shuffled = torch.rand(b, device=dev, generator=generator) < cfg.local_rate
    if shuffled.any():
        index = shuffle_index(tuple(cubes.shape[2:]), cfg.shuffle_block, cfg.shuffle_coverage, generator, dev)
    mapped = torch.rand(b, device=dev, generator=generator) < cfg.nonlinear_rate
    if mapped.any():
        lut = bezier_lut(int(mapped.sum()), generator, dev)
    painted = torch.rand(b, device=dev, generator=generator) < cfg.paint_rate
    order, edges = _runs(mapped, painted, shuffled)
    x = torch.empty_like(targets)
    for a, e, (_, _, shuffle) in zip(edges, edges[1:], _CLASSES):
        if e > a and shuffle:
            _shuffled(targets.index_select(0, order[a:e]), index, out=x[a:e])
        elif e > a:
            torch.index_select(targets, 0, order[a:e], out=x[a:e])
    low, high = (r.index_select(0, order) for r in _range(targets))  # flips and shuffling keep each cube's values
    a, e = edges[0], edges[4]
    if e > a:
        _lut_map_(x[a:e], lut.index_select(0, _rows(mapped, order[a:e])), low[a:e], high[a:e])
        a = edges[2]  # the mapped cubes that are painted: the noise spans the mapped range
        low[a:e], high[a:e] = _range(x[a:e])
    a, e = edges[2], edges[6]
    if e > a:
        inpaint = torch.rand(e - a, device=dev, generator=generator) < cfg.inpaint_rate
        _paint_(x[a:e], low[a:e], high[a:e], inpaint, generator, rows=_rows(painted, order[a:e]))
    return x.index_select(0, torch.argsort(order)), targets


# classes of cubes by (mapped, painted, shuffled), in the order the inputs are built: the mapped cubes
# are then one run (classes 0-3), the painted one (2-5), the shuffled two (1-2, 5-6: three sets cannot
# all be single runs)
_CLASSES = ((1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1), (0, 0, 0))
_CLASS_OF_CODE = tuple(_CLASSES.index((c >> 2, c >> 1 & 1, c & 1)) for c in range(8))  # code: mapped, painted, shuffled bits


def _runs(mapped: torch.Tensor, painted: torch.Tensor, shuffled: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """An order of the cubes that sorts them by class, and the 9 edges of the classes in it."""
    code = mapped.long() * 4 + painted.long() * 2 + shuffled.long()
    cls = torch.tensor(_CLASS_OF_CODE, device=code.device)[code]
    return torch.argsort(cls, stable=True), [0, *torch.bincount(cls, minlength=8).cumsum(0).tolist()]


def _rows(chosen: torch.Tensor, cubes: torch.Tensor) -> torch.Tensor:
    """For ``cubes`` among the ``chosen`` ones, their rows in the draws made for the chosen in batch order."""
    return (chosen.cumsum(0) - 1)[cubes]
