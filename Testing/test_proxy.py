"""The proxy task: multi-scale cubes and Models Genesis corruptions, as batched tensor ops."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sarseg import proxy
from sarseg.config import ProxyConfig
from sarseg.data import PoolVolume, VolumePool, prepare

CFG = ProxyConfig(input_size=(32, 32, 16), scales=(16.0, 32.0, 64.0))
OFF = dataclasses.replace(CFG, flip_rate=0.0, local_rate=0.0, nonlinear_rate=0.0, paint_rate=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured_cubes(n: int = 6, seed: int = 0) -> torch.Tensor:
    """Cubes with smooth structure, values in [0, 1], like normalised scans."""
    x = torch.rand(n, 1, 16, 32, 32, generator=gen(seed))
    x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1)
    return (x - x.amin()) / (x.amax() - x.amin())


def ramp_volume(shape=(48, 96, 96)) -> dict:
    """Intensity = x position in mm (1 mm voxels), so a cube's x-range tells its physical size."""
    x = torch.arange(shape[2], dtype=torch.float32) + 0.5
    volume = x[None, None, None, :].expand(1, *shape).contiguous()
    return {"volume": volume, "spacing": torch.ones(3, dtype=torch.float64), "source": 0}


def test_scale_labels_match_the_physical_size_of_each_cube() -> None:
    pooled = prepare(ramp_volume(), OFF, torch.device("cpu"))
    cubes, labels = proxy.sample_cubes(pooled.views, pooled.foreground, 60, OFF.size_zyx, gen())
    assert cubes.shape == (60, 1, 16, 32, 32)
    assert set(labels.tolist()) == {0, 1, 2}
    span = cubes[:, 0, :, :, -1].mean(dim=(1, 2)) - cubes[:, 0, :, :, 0].mean(dim=(1, 2))
    expected = torch.tensor(OFF.scales)[labels] * (1 - 1 / 32)  # centre of first to last output voxel
    assert torch.allclose(span, expected, rtol=0.08)


def test_cubes_are_crops_of_the_volume_grouped_by_scale() -> None:
    # value = 10000 z + 100 y + x: a crop (scale 1, the input size) or an area-averaged crop (scale 2,
    # half the resolution) is that pattern with step 1 or 2 from its first voxel; scale 0 is resized
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (48, 96, 96)), indexing="ij")
    item = {"volume": (10000 * z + 100 * y + x)[None], "spacing": torch.ones(3, dtype=torch.float64), "source": 0}
    pooled = prepare(item, OFF, torch.device("cpu"))
    cubes, labels = proxy.sample_cubes(pooled.views, pooled.foreground, 40, OFF.size_zyx, gen())
    assert torch.equal(labels, labels.sort().values) and set(labels.tolist()) == {0, 1, 2}
    pattern = (10000 * z + 100 * y + x)[:16, :32, :32]
    for cube, label in zip(cubes[:, 0], labels.tolist()):
        if label:
            assert torch.allclose(cube - cube[0, 0, 0], pattern * label, atol=1e-2)


def test_resize_matches_interpolates_trilinear() -> None:
    part = torch.rand(3, 2, 7, 20, 13, generator=gen())
    for size in ((16, 32, 32), (7, 40, 13), (14, 20, 26)):
        expected = torch.nn.functional.interpolate(part, size=size, mode="trilinear", align_corners=False)
        assert torch.allclose(proxy._resize(part, torch.empty(3, 2, *size)), expected, atol=1e-6)


def test_scales_that_do_not_fit_are_never_drawn() -> None:
    item = ramp_volume(shape=(24, 40, 40))  # 40 mm: the 64 mm scale does not fit
    pooled = prepare(item, OFF, torch.device("cpu"))
    assert pooled.views[2] is None
    _, labels = proxy.sample_cubes(pooled.views, pooled.foreground, 50, OFF.size_zyx, gen())
    assert 2 not in labels.tolist()


def test_scales_as_fractions_follow_the_volume_extent() -> None:
    cfg = dataclasses.replace(OFF, scales=(0.25, 0.5), scale_unit="fraction")
    sizes = proxy.scale_extents_mm(cfg, torch.tensor([100.0, 200.0, 200.0]))
    # x-extent limited by z: 100 mm of z at aspect 16/32 allows 200 mm of x
    assert sizes[:, 2].tolist() == pytest.approx([50.0, 100.0])
    assert sizes[:, 0].tolist() == pytest.approx([25.0, 50.0])


def test_cubes_are_centred_on_foreground_not_air() -> None:
    volume = torch.zeros(1, 48, 96, 96)
    volume[:, 16:32, 40:56, 40:56] = 1.0  # a small bright object in air
    item = {"volume": volume, "spacing": torch.ones(3, dtype=torch.float64), "source": 0}
    pooled = prepare(item, OFF, torch.device("cpu"))
    cubes, _ = proxy.sample_cubes(pooled.views, pooled.foreground, 40, OFF.size_zyx, gen())
    assert (cubes.flatten(1).amax(dim=1) > 0).all()


def test_air_z_scored_to_the_mean_is_not_foreground(tmp_path) -> None:
    """With MR z-scored and the air set to 0 (fine-tuning's normalisation, used to pretrain too), the air sits
    above the darkest brain: cube centres come from the raw volume's body mask, not the intensities alone."""
    import numpy as np

    from sarseg.config import FINETUNE_NORMALISATION
    from sarseg.data import LoadVolume
    from sarseg.io import Geometry, write_image

    raw = np.zeros((48, 96, 96), np.float32)
    raw[8:40, 24:72, 24:72] = np.random.default_rng(0).normal(400.0, 100.0, (32, 48, 48)).clip(1.0)  # a "brain" in air
    path = tmp_path / "brain.nii.gz"
    write_image(path, raw, Geometry((96, 96, 48), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)))
    loaded = LoadVolume(FINETUNE_NORMALISATION)({"path": str(path), "name": "mr", "source": 0})
    assert (loaded["volume"][0][torch.from_numpy(raw == 0)] == 0).all()  # air at the mean
    inside = torch.from_numpy(raw > 0)
    assert not inside[tuple(proxy.foreground_coordinates(loaded["volume"], OFF.foreground_threshold).T)].all()  # alone: air passes
    centres = prepare(loaded, OFF, torch.device("cpu")).foreground
    assert len(centres) and inside[tuple(centres.T)].all()


def test_corrupt_leaves_its_input_alone_and_targets_clean() -> None:
    cubes = textured_cubes()
    before = cubes.clone()
    noflip = dataclasses.replace(CFG, flip_rate=0.0, local_rate=1.0, nonlinear_rate=1.0, paint_rate=1.0)
    inputs, targets = proxy.corrupt(cubes, noflip, gen())
    assert torch.equal(cubes, before)
    assert torch.equal(targets, before)
    assert not torch.equal(inputs, targets)
    assert inputs.shape == targets.shape == cubes.shape


def test_corrupt_keeps_each_cubes_range() -> None:
    # any range, not only [0, 1]; ranges far apart, so an input built from another cube would show
    cubes = textured_cubes(8) * 300 - 100 + 1000 * torch.arange(8.0).view(8, 1, 1, 1, 1)
    for rate in (1.0, 0.5):
        inputs, _ = proxy.corrupt(cubes, dataclasses.replace(CFG, local_rate=rate, nonlinear_rate=rate, paint_rate=rate), gen())
        low, high = cubes.flatten(1).amin(1), cubes.flatten(1).amax(1)
        assert (inputs.flatten(1).amin(1) >= low - 1e-3).all()
        assert (inputs.flatten(1).amax(1) <= high + 1e-3).all()


@pytest.mark.parametrize("rate", ["local_rate", "nonlinear_rate", "paint_rate"])
def test_each_corruption_changes_the_cubes_drawn_for_it_and_no_others(rate: str) -> None:
    cubes = textured_cubes(40)
    for value in (1.0, 0.5):  # out-painting only: in-painting adds no hole 5% of the time, like Genesis
        inputs, targets = proxy.corrupt(cubes, dataclasses.replace(OFF, inpaint_rate=0.0, **{rate: value}), gen())
        assert torch.equal(targets, cubes)
        changed = int((inputs != targets).flatten(1).any(dim=1).sum())
        assert changed == 40 if value == 1.0 else 10 < changed < 30


def test_corrupt_is_reproducible_with_a_seed() -> None:
    cubes = textured_cubes()
    a = proxy.corrupt(cubes, CFG, gen(7))
    b = proxy.corrupt(cubes, CFG, gen(7))
    c = proxy.corrupt(cubes, CFG, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_rates_of_zero_change_nothing() -> None:
    cubes = textured_cubes()
    inputs, targets = proxy.corrupt(cubes, OFF, gen())
    assert torch.equal(inputs, cubes) and torch.equal(targets, cubes)


def test_flips_act_on_input_and_target_alike() -> None:
    cubes = textured_cubes(16)
    x, y = cubes.clone(), cubes.clone()
    proxy.random_flips(x, y, 1.0, gen())
    assert torch.equal(x, y)
    flipped = [not torch.equal(x[i], cubes[i]) for i in range(16)]
    assert any(flipped)
    for i in range(16):  # each cube is its original flipped along some set of axes
        assert any(torch.equal(x[i], cubes[i].flip(dims)) for dims in
                   [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)])


def test_local_shuffle_permutes_voxels_only_within_small_blocks() -> None:
    cubes = textured_cubes(4)
    out = proxy.local_pixel_shuffle(cubes, 0.1, 1.0, gen())
    assert not torch.equal(out, cubes)
    for i in range(4):  # a permutation: same values
        assert torch.equal(out[i].flatten().sort().values, cubes[i].flatten().sort().values)
    # blocks are small, so coarse (8-voxel) averages barely move
    coarse = torch.nn.functional.avg_pool3d
    assert (coarse(out, 8) - coarse(cubes, 8)).abs().max() < 0.1


def test_shuffle_index_is_a_permutation() -> None:
    index = proxy.shuffle_index((16, 32, 32), 0.1, 0.85, gen(), torch.device("cpu"))
    assert torch.equal(index.sort().values, torch.arange(16 * 32 * 32))


def test_nonlinear_intensity_is_a_per_cube_function_of_intensity() -> None:
    levels = torch.randint(0, 5, (3, 1, 16, 32, 32), generator=gen()).float() / 4  # five grey levels
    out = proxy.nonlinear_intensity(levels, gen(3))
    assert not torch.allclose(out, levels, atol=1e-2)
    for i in range(3):
        for level in levels[i].unique():
            mapped = out[i][levels[i] == level]
            assert torch.allclose(mapped, mapped[0].expand_as(mapped))  # same input, same output
    lut = proxy.bezier_lut(64, gen(), torch.device("cpu"))
    assert lut.shape == (64, 4096)
    assert (lut >= -1e-6).all() and (lut <= 1 + 1e-6).all()
    rising = lut[:, -1] > lut[:, 0]
    assert 10 < int(rising.sum()) < 54  # as Genesis, about half the maps invert intensities


def test_inpainting_fills_boxes_and_outpainting_keeps_windows() -> None:
    inpaint = torch.tensor([True] * 20 + [False] * 20)
    mask = proxy.paint_mask(inpaint, (16, 32, 32), gen())
    share = mask.float().mean(dim=(1, 2, 3, 4))
    assert share[:20].max() < 0.5  # holes: a few boxes of 1/6..1/3 sides
    assert share[20:].min() > 0.3  # out-painting: everything outside a few windows
    assert (share[20:] < 1).all()  # the first window is always kept
    cubes = textured_cubes(40)
    changed = (proxy.paint(cubes, inpaint, gen()) != cubes).float().mean(dim=(1, 2, 3, 4))
    assert changed[:20].max() < 0.5 and changed[20:].min() > 0.3


def test_pool_batch_has_labels_for_every_cube() -> None:
    items = [dict(ramp_volume(), source=s) for s in (0, 1)]
    pool = VolumePool([prepare(i, CFG, torch.device("cpu")) for i in items], CFG, torch.device("cpu"))
    assert all(isinstance(v, PoolVolume) for v in pool.volumes)
    batch = pool.sample(12, gen())
    assert batch.inputs.shape == batch.targets.shape == (12, 1, 16, 32, 32)
    assert batch.scales.shape == batch.sources.shape == (12,)
    assert set(batch.sources.tolist()) <= {0, 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_the_same_ops_run_on_cuda() -> None:
    device = torch.device("cuda")
    cubes = textured_cubes().to(device)
    inputs, targets = proxy.corrupt(cubes, CFG, torch.Generator(device=device).manual_seed(0))
    assert inputs.device.type == "cuda" and inputs.shape == cubes.shape
