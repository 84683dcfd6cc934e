"""Prompts on voxels (``sarseg.clicks``) and on the image (``sarseg.prompted``): the guidance channels are
MONAI deepgrow's, simulated clicks land where interactive benchmarks put them, the crop around the
prompts, and points in LPS mm found in (or outside) the image on a rotated, anisotropic grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from monai.apps.deepgrow.transforms import AddGuidanceSignald

from sarseg import phantom
from sarseg.clicks import (Simulation, VoxelPrompts, box_around, click_in, correction, dice, first_prompt, guidance,
                           largest_component, simulate)
from sarseg.core.card import PromptSpec
from sarseg.core.errors import BadInput
from sarseg.core.prompts import Prompts
from sarseg.prompted import crop_around, to_voxels


def ball(shape=(24, 24, 24), centre=(11, 12, 13), radius=5.0) -> np.ndarray:
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2


# ------------------------------------------------------------------------------------ guidance channels


@pytest.mark.parametrize("sigma", [1.0, 2.0, 3.3])
def test_click_channels_are_monai_deepgrows(sigma: float) -> None:
    prompts = VoxelPrompts(positive=((5, 10, 10), (0, 0, 1)), negative=((2, 3, 4), (8, 8, 8), (9, 30, 9)),
                           box=(1, 2, 3, 6, 12, 14))
    shape = (30, 40, 40)
    channels = guidance(prompts, shape, PromptSpec(sigma=sigma))
    inside = [[list(p) for p in prompts.positive], [list(p) for p in prompts.negative]]
    monai = AddGuidanceSignald(sigma=sigma, number_intensity_ch=0)({"image": np.zeros((1, *shape)), "guidance": inside})["image"]
    np.testing.assert_allclose(channels[:2], monai, atol=1e-5)
    assert channels.shape == (3, *shape) and channels[0][5, 10, 10] == 1.0
    box = np.zeros(shape, dtype=np.float32)
    box[1:6, 2:12, 3:14] = 1.0
    np.testing.assert_array_equal(channels[2], box)


def test_guidance_follows_the_model_channels_and_leaves_out_clicks_off_the_grid() -> None:
    prompts = VoxelPrompts(positive=((2, 2, 2), (40, 2, 2)), negative=((-1, 3, 3),))
    channels = guidance(prompts, (8, 8, 8), PromptSpec(("positive", "negative"), 1.0))
    assert channels.shape == (2, 8, 8, 8)
    assert channels[0].argmax() == np.ravel_multi_index((2, 2, 2), (8, 8, 8)) and channels[0][7].max() < 1e-3
    assert not channels[1].any()  # its only click lies off the grid
    assert not guidance(VoxelPrompts(), (4, 4, 4), PromptSpec()).any()


# ------------------------------------------------------------------------------------ simulated clicks


def test_a_click_lands_deepest_inside_or_drawn_inside() -> None:
    region = ball()
    assert click_in(region) == (11, 12, 13)
    rng = np.random.default_rng(0)
    drawn = [click_in(region, rng=rng) for _ in range(50)]
    assert all(region[d] for d in drawn) and len(set(drawn)) > 10
    slab = np.zeros((10, 40, 40), dtype=bool)
    slab[2:8, 5:35, 5:35] = True  # 6 voxels thick in z, 30 in y and x: 1 x 1 x 6 mm voxels make it 36 mm thick in z
    assert click_in(slab)[0] in (4, 5) and click_in(slab, spacing=(6.0, 1.0, 1.0))[1:] == (19, 19)


def test_the_correction_goes_to_the_largest_error_region() -> None:
    target = ball()
    missed = target.copy()
    missed[:11] = False  # the lower half of the ball is missed
    click, positive = correction(target, missed)
    assert positive and target[click] and not missed[click] and click[0] < 11
    spill = target.copy()
    spill[0:4, 0:20, 0:20] = True  # 1600 voxels marked outside, more than any miss
    spill[11, 12, 13] = False
    click, positive = correction(target, spill)
    assert not positive and spill[click] and not target[click]
    assert correction(target, target) is None


def test_boxes_jitter_within_their_reach() -> None:
    target = ball()
    assert box_around(target) == (6, 7, 8, 17, 18, 19)
    rng = np.random.default_rng(1)
    for _ in range(50):
        box = np.array(box_around(target, rng, 0.2))  # 0.2 x 11 voxels: up to 2 voxels a side
        assert np.all(np.abs(box - [6, 7, 8, 17, 18, 19]) <= 2) and np.all(box[3:] > box[:3])
    edge = np.zeros((8, 8, 8), dtype=bool)
    edge[0:2, 0:2, 6:8] = True
    for _ in range(20):
        box = box_around(edge, rng, 1.0)
        assert min(box) >= 0 and max(box[3:]) <= 8 and all(box[k + 3] > box[k] for k in range(3))


def test_first_prompts() -> None:
    rng = np.random.default_rng(2)
    target = ball()
    kinds = [first_prompt(target, rng, 0.5, 0.1) for _ in range(40)]
    assert {p.box is None for p in kinds} == {True, False}
    assert all(target[p.positive[0]] for p in kinds if p.box is None)
    assert not first_prompt(np.zeros((4, 4, 4), dtype=bool), rng, 0.5, 0.1)


def test_simulated_interaction_with_an_oracle() -> None:
    """A model that marks a 4-voxel ball around each positive click and clears one around each negative
    click: the clicks follow the errors and the Dice only grows."""
    target = ball(radius=6.0) | ball(centre=(11, 12, 3), radius=2.0)  # a lesion with a smaller part beside it

    def oracle(prompts: VoxelPrompts) -> np.ndarray:
        mask = np.zeros(target.shape, dtype=bool)
        for p in prompts.positive:
            mask |= ball(target.shape, p, 4.0)
        for p in prompts.negative:
            mask &= ~ball(target.shape, p, 2.0)
        return mask

    result = simulate(oracle, target, 6)
    assert len(result.dice) == 6 and result.prompts.positive[0] == (11, 12, 13)  # first: the larger part's centre
    assert all(b >= a for a, b in zip(result.dice, result.dice[1:])) and result.dice[-1] > result.dice[0]
    assert all(target[p] for p in result.prompts.positive)
    perfect = simulate(lambda prompts: target, target, 5)
    assert perfect.dice == [1.0] * 5 and len(perfect.prompts.positive) == 1
    assert Simulation([0.5, 0.86, 0.91]).clicks_to(0.85) == 2 and Simulation([0.5, 0.86]).clicks_to(0.9) is None
    boxed = simulate(oracle, target, 2, box=True)
    assert boxed.prompts.box == box_around(largest_component(target))


def test_dice() -> None:
    a, b = ball(), ball(centre=(11, 12, 14))
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0 and 0.8 < dice(a, b) < 1.0
    assert dice(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)) == 1.0


# ------------------------------------------------------------------------------------ the image's grid


def test_the_crop_is_the_prompts_widened_by_half_a_patch() -> None:
    patch = (16, 32, 32)
    one = VoxelPrompts(positive=((20, 50, 60),))
    assert crop_around(one, (48, 96, 96), patch) == (slice(12, 28), slice(34, 66), slice(44, 76))  # one window
    two = VoxelPrompts(positive=((20, 50, 60), (30, 10, 62)))
    assert crop_around(two, (48, 96, 96), patch) == (slice(12, 38), slice(0, 72), slice(44, 78))  # moved inside, its size kept
    assert crop_around(one.add((30, 10, 62), positive=False), (48, 96, 96), patch) == crop_around(one, (48, 96, 96), patch)
    corner = VoxelPrompts(positive=((0, 95, 0),))
    assert crop_around(corner, (48, 96, 96), patch) == (slice(0, 16), slice(64, 96), slice(0, 32))  # moved inside
    assert crop_around(one, (10, 20, 96), patch) == (slice(0, 10), slice(0, 20), slice(44, 76))  # a small volume whole
    boxed = VoxelPrompts(box=(5, 6, 7, 40, 41, 42))
    assert crop_around(boxed, (48, 96, 96), patch) == (slice(0, 48), slice(0, 66), slice(0, 66))


def test_points_in_lps_mm_on_a_rotated_anisotropic_grid() -> None:
    geometry = phantom.geometry((48, 96, 96))  # y flipped, 1.5 x 1.5 x 3 mm
    grid = geometry.apply_to(sitk.Image(list(geometry.size), sitk.sitkUInt8))
    point = grid.TransformContinuousIndexToPhysicalPoint((10.2, 20.4, 30.3))  # x, y, z index
    prompts = to_voxels(Prompts(positive=(point,), negative=(grid.TransformIndexToPhysicalPoint((0, 0, 0)),)), geometry, "--points")
    assert prompts.positive == ((30, 20, 10),) and prompts.negative == ((0, 0, 0),)
    edge = grid.TransformContinuousIndexToPhysicalPoint((95.49, -0.49, 47.49))  # within the last voxels' edges
    assert to_voxels(Prompts(positive=(edge,)), geometry, "p").positive == ((47, 0, 95),)
    low = grid.TransformIndexToPhysicalPoint((2, 3, 4))
    high = grid.TransformIndexToPhysicalPoint((6, 9, 8))
    box = (*np.minimum(low, high), *np.maximum(low, high))  # the flipped y axis: LPS bounds are not index order
    assert to_voxels(Prompts(box=box), geometry, "--roi").box == (4, 3, 2, 9, 10, 7)


@pytest.mark.parametrize("index", [(-0.6, 0, 0), (0, 95.6, 0), (0, 0, 48)])
def test_a_point_outside_the_image_is_named_with_the_extent(index) -> None:
    geometry = phantom.geometry((48, 96, 96))
    grid = geometry.apply_to(sitk.Image(list(geometry.size), sitk.sitkUInt8))
    point = grid.TransformContinuousIndexToPhysicalPoint(index)
    with pytest.raises(BadInput) as caught:
        to_voxels(Prompts(positive=(point,)), geometry, "--points 1,2,3")
    assert caught.value.what == "--points 1,2,3"
    assert "lies outside the image" in caught.value.problem
    assert "x -72.75..71.25, y -71.25..72.75, z -71.5..72.5 mm" in caught.value.problem  # voxel edges, LPS
