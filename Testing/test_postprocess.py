"""Post-processing of label maps: hole filling, largest component, minimum size."""

from __future__ import annotations

import numpy as np

from sarseg.core.card import InferenceConfig
from sarseg.core.labels import SCHEMES
from sarseg.infer import postprocess

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
