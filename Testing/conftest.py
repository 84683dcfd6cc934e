"""Shared fixtures: where the real scans live (``../shared/data``), skipping with a reason when absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sarseg.runtime import configure_threads, tune_malloc

tune_malloc()
configure_threads(None)  # before any test loads torch: OpenMP threads that wait spin briefly, then sleep

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
for _module_dir in (ROOT / "SARSegmentation", ROOT / "SARPretrain"):  # as Slicer puts them on sys.path
    if str(_module_dir) not in sys.path:
        sys.path.insert(0, str(_module_dir))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tiny networks (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    pinned losses were recorded so, and a second thread only slows tiny nets on 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real scans not found at {SHARED_DATA} (the shared data folder beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_sources(shared_data: Path) -> list[str]:
    """MR, CT and PET sources from the shared real cases, as ``sarseg pretrain --data`` specs."""
    d = shared_data
    return [f"mr={d}/sarcoma/*MR_T1_image.nii.gz", f"mr={d}/tcga_gbm/brain?_image.nrrd",
            f"ct={d}/sarcoma/*CT_image.nii.gz", f"ct={d}/lung_ct/image.nii.gz",
            f"pet={d}/sarcoma/*PET_image.nii.gz"]
