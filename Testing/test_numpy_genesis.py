"""Smoke test for the per-cube numpy Models Genesis benchmark baseline.

benchmarks/ is not a package, so the module is loaded by file path.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sarseg.bench import synthetic_volumes

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "numpy_genesis.py"


@pytest.fixture(scope="module")
def ng():
    spec = importlib.util.spec_from_file_location("numpy_genesis", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pairs(ng, volume, seed, n=3):
    rng = np.random.default_rng(seed)
    return [ng.generate_pair([volume], rng, size_zyx=(32, 64, 64)) for _ in range(n)]


def test_generate_pair_shapes_ranges_and_determinism(ng):
    volume = synthetic_volumes(count=1, shape=(56, 104, 104), seed=1)[0]
    first = _pairs(ng, volume, seed=123)
    for x, y, scale in first:
        assert x.shape == (32, 64, 64)
        assert y.shape == (32, 64, 64)
        assert np.isfinite(x).all()
        assert y.min() >= 0.0 and y.max() <= 1.0
        assert scale in {0, 1, 2}
    second = _pairs(ng, volume, seed=123)
    for (x1, y1, s1), (x2, y2, s2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
        assert s1 == s2
