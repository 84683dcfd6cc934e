"""Post-processing of label maps: hole filling, largest component, minimum size; and the rule that
voxels outside the scan are background."""

from __future__ import annotations

import numpy as np
import torch

from sarseg.core.card import InferenceConfig
from sarseg.core.labels import SCHEMES
from sarseg.infer import postprocess, predict
from sarseg.io import Normalisation, body_mask

BINARY = SCHEMES["binary"]


def two_blobs() -> np.ndarray:
    label = np.zeros((20, 20, 20), dtype=np.int16)
    label[2:12, 2:12, 2:12] = 1  # 1000 voxels with a hole
    label[6, 6, 6] = 0
    label[15:17, 15:17, 15:17] = 1  # 8 voxels
    return label


def test_nothing_asked_nothing_changed() -> None:
    label = two_blobs()
    assert np.array_equal(postprocess(label, BINARY, InferenceConfig(), (1, 1, 1)), label)


def test_minimum_size_counts_cubic_millimetres() -> None:
    out = postprocess(two_blobs(), BINARY, InferenceConfig(min_size_mm3=50), (2.0, 2.0, 2.0))  # 8 voxels = 64 mm3
    assert out[15:17, 15:17, 15:17].all()
    out = postprocess(two_blobs(), BINARY, InferenceConfig(min_size_mm3=100), (2.0, 2.0, 2.0))
    assert not out[15:17, 15:17, 15:17].any() and out[2:5, 2:5, 2:5].all()


def test_largest_component_and_holes() -> None:
    out = postprocess(two_blobs(), BINARY, InferenceConfig(largest_component=True, fill_holes=True), (1, 1, 1))
    assert out.sum() == 1000 and out[6, 6, 6] == 1


class AlwaysTumor(torch.nn.Module):
    """A network that calls every voxel tumor, whatever it sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 1, *x.shape[2:]), 5.0)


def test_voxels_outside_the_scan_are_background_after_z_scoring() -> None:
    """z-scoring puts the air around a skull-stripped brain at 0, the brain's mean, so the rule cannot read
    it from the normalised volume: the body mask comes from the raw image."""
    rng = np.random.default_rng(0)
    raw = np.zeros((2, 16, 32, 32), np.float32)
    raw[:, 4:12, 8:24, 8:20] = rng.normal(300.0, 50.0, (2, 8, 16, 12))
    volume = np.stack([Normalisation("zscore", outside=0.0)(c) for c in raw])
    assert (volume[:, raw[0] == 0] == 0).all() and volume.min() < 0  # air at the mean, not the minimum
    body = body_mask(raw)
    assert body.sum() == 8 * 16 * 12
    probs = predict(AlwaysTumor(), torch.from_numpy(volume), (16, 16, 16), BINARY, InferenceConfig(), torch.device("cpu"),
                    body=body)
    assert np.array_equal(BINARY.to_label_map(probs) > 0, body)
