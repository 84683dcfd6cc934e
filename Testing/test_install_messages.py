"""What the dependency installer tells the user (``SARSegmentationLib.dependencies``): which packages, how
large, which step runs, and on failure the exact command to run in Slicer's Python console, where pip's
output is and where to read more. Plain text from plain functions: no Qt, no Slicer, nothing installed."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts it on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

pytest.importorskip("packaging", reason="Slicer's Python has packaging; the installer's checks use it")

from SARSegmentationLib import about, dependencies  # noqa: E402

SLICER = {"numpy": "1.26.4", "SimpleITK": "2.4.0"}  # what Slicer ships, pinned on every pip command


def test_psutil_is_asked_for_only_where_there_is_no_proc() -> None:
    have = {**SLICER, "torch": "2.9.0", "monai": "1.6.1", "scipy": "1.14.0", "safetensors": "0.4.5",
            "matplotlib": "3.9.0"}
    assert dependencies.missing(have.get, python=(3, 12), system="linux").nothing
    for system in ("win32", "darwin"):
        assert dependencies.missing(have.get, python=(3, 12), system=system).packages == ["psutil>=5.9"]
    assert dependencies.missing({**have, "psutil": "7.0.0"}.get, python=(3, 12), system="win32").nothing


def test_each_step_says_what_it_installs_how_large_and_the_command_that_does_it() -> None:
    need = dependencies.missing({**SLICER, "monai": "1.6.1", "matplotlib": "3.9.0"}.get, python=(3, 12),
                                system="win32")
    steps = dependencies.install_steps(need, SLICER.get)
    assert [s.title for s in steps] == ["PyTorch, torch>=2.8", "scipy>=1.10", "safetensors>=0.4", "psutil>=5.9"]
    torch, scipy = steps[0], steps[1]
    assert torch.pip is None and torch.torch == ">=2.8" and "2.5 GB" in torch.size
    assert torch.command == ("import PyTorchUtils; PyTorchUtils.PyTorchUtilsLogic().installTorch("
                             "torchVersionRequirement='>=2.8')")
    assert scipy.pip == ["scipy>=1.10", "SimpleITK==2.4.0", "numpy==1.26.4"]  # Slicer's own kept as they are
    assert scipy.command == "slicer.util.pip_install(['scipy>=1.10', 'SimpleITK==2.4.0', 'numpy==1.26.4'])"
    assert scipy.size == "about 40 MB"
    assert ast.literal_eval(scipy.command.removeprefix("slicer.util.pip_install")) == scipy.pip  # pasteable as shown

    question = dependencies.confirmation_text(steps)
    assert "  - PyTorch, torch>=2.8: about 0.2 GB for the CPU build, up to 2.5 GB with CUDA\n" in question
    assert "  - psutil>=5.9: under 1 MB\n" in question and "SimpleITK, numpy and VTK are left" in question
    status = dependencies.status_text(scipy, 1, len(steps))
    assert status.startswith("Installing scipy>=1.10 (about 40 MB), step 2 of 4.")
    assert "Python Console" in status


def test_a_failure_says_what_to_run_by_hand_and_where_the_log_is() -> None:
    step = dependencies.install_steps(dependencies.Missing(packages=["monai>=1.6,<1.7"]), SLICER.get)[0]
    error = RuntimeError("Command '['PythonSlicer', '-m', 'pip', 'install', ...]' returned non-zero exit status 1.")
    text, details = dependencies.failure_text(step, error, "/home/u/.config/NA-MIC/Slicer-log.txt")
    assert text.startswith("Installing monai>=1.6,<1.7 failed.\n")
    assert "View > Python Console" in text
    assert "\nslicer.util.pip_install(['monai>=1.6,<1.7', 'SimpleITK==2.4.0', 'numpy==1.26.4'])\n" in text
    assert "Slicer's log file:\n/home/u/.config/NA-MIC/Slicer-log.txt" in text and "restart Slicer" in text
    assert text.endswith(f"Help: {about.HOMEPAGE}#install")
    assert details == f"RuntimeError: {error}"
    assert "log file" not in dependencies.failure_text(step, error, None)[0]  # no log file: not invented
