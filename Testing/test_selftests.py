"""The modules' self-tests (``SARSegmentationTest``, ``SARPretrainTest``, run by Slicer's ctest through
``slicer_add_python_unittest``, see test_packaging.py) stay small and leave nothing behind: their folder
(``selftest_workspace``) holds every file they and their jobs write, they download nothing, and they
train tiny models for a few steps on generated volumes. The tests themselves need the Slicer application;
what they are made of is checked here."""

from __future__ import annotations

import ast
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts the module folders on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib.dependencies import Missing  # noqa: E402
from SARSegmentationLib.jobs import selftest_missing, selftest_workspace  # noqa: E402
from SARSegmentationLib.models import work_root  # noqa: E402
from sarseg import io as sario  # noqa: E402
from sarseg import phantom  # noqa: E402
from sarseg.core import paths  # noqa: E402

MODULES = ("SARSegmentation", "SARPretrain")
MAX_STEPS = 10
MAX_VOXELS = 64 ** 3
FOLDERS = (paths.HOME, paths.MODELS, paths.JOBS, paths.CACHE)


@pytest.fixture
def user_folders(tmp_path, monkeypatch) -> Path:
    """SAR's folders of a pretend user, which a self-test must leave untouched."""
    user = tmp_path / "user"
    for variable in FOLDERS:
        monkeypatch.setenv(variable, str(user / variable.lower()))
    return user


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_workspace_holds_every_folder_and_its_jobs_write_there(user_folders, tmp_path):
    """A real background job (a 2-step tiny pretraining) started from the workspace writes only inside it;
    afterwards the user's folders are as before and the workspace is gone."""
    before = dict(os.environ)
    with selftest_workspace("Test", parent=tmp_path / "slicer-temp") as (root, models, runner):
        assert root.parent == tmp_path / "slicer-temp"
        for folder in (paths.home(), paths.models(), paths.jobs(), paths.cache(), work_root(), models.root,
                       runner.root):
            assert root in folder.parents, folder
        assert all(root in Path(runner.env[variable]).parents for variable in FOLDERS)
        shape = (24, 48, 48)
        image = sario.write_image(root / "cases" / "mr.nii.gz", phantom.make_case(1, shape)[0]["mr"],
                                  phantom.geometry(shape))
        job = runner.submit("pretrain", ["pretrain", "--data", f"mr={image}", "--preset", "tiny", "--steps", "2",
                                         "--workers", "0", "--out", str(root / "models" / "sar")], "cpu")
        deadline = time.monotonic() + 300
        while not runner.poll(job.id).finished and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runner.poll(job.id).state == "done", runner.log(job.id)
        assert (root / "models" / "sar" / "model.json").is_file()
    assert not (tmp_path / "slicer-temp").exists() or not any((tmp_path / "slicer-temp").iterdir())
    assert _files(user_folders) == []
    assert dict(os.environ) == before


def test_workspace_is_kept_when_the_test_fails(user_folders, tmp_path, caplog):
    before = dict(os.environ)
    with caplog.at_level(logging.WARNING), pytest.raises(AssertionError):
        with selftest_workspace("Test", parent=tmp_path) as (root, _models, _runner):
            (root / "evidence.txt").write_text("kept")
            raise AssertionError("the self-test failed")
    assert (root / "evidence.txt").read_text() == "kept"
    assert str(root) in caplog.text
    assert dict(os.environ) == before


def test_selftest_missing_says_why_it_skips():
    assert selftest_missing(Missing()) == ""
    missing = selftest_missing(Missing(torch=">=2.3", packages=["monai>=1.4"]))
    assert "PyTorch (>=2.3), monai>=1.4" in missing and "downloads nothing" in missing
    assert "cannot run here" in selftest_missing(Missing(engine=True))


# -- what the self-tests are made of ------------------------------------------------------------------------

def _test_class(module: str) -> ast.ClassDef:
    tree = ast.parse((ROOT / module / f"{module}.py").read_text(encoding="utf-8"))
    return next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == f"{module}Test")


def _constant(node: ast.AST):
    return node.value if isinstance(node, ast.Constant) else None


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_download_nothing_and_write_only_into_their_workspace(module):
    cls = _test_class(module)
    methods = [node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]
    assert methods
    calls = {ast.unparse(node.func) for node in ast.walk(cls) if isinstance(node, ast.Call)}
    assert not {call for call in calls if call.endswith("ensure_dependencies")}, "installing is not a test's to do"
    for method in methods:
        first = method.body[0]
        assert ast.unparse(first) == "missing = selftest_missing()", f"{method.name}: skip without SAR's packages"
        workspaces = [item for node in ast.walk(method) if isinstance(node, ast.With) for item in node.items
                      if isinstance(item.context_expr, ast.Call) and ast.unparse(item.context_expr.func) == "selftest_workspace"]
        assert len(workspaces) == 1, f"{method.name}: everything inside `with selftest_workspace(...)`"


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_train_tiny_models_on_small_generated_volumes(module):
    cls = _test_class(module)
    steps, presets = [], []
    for node in ast.walk(cls):
        if isinstance(node, ast.List):  # sarseg command lines: "--steps", "10", "--preset", "tiny"
            items = [_constant(e) for e in node.elts]
            steps += [int(items[i + 1]) for i, item in enumerate(items[:-1]) if item == "--steps"]
            presets += [items[i + 1] for i, item in enumerate(items[:-1]) if item == "--preset"]
        if isinstance(node, ast.Call):  # the module logic: preset="tiny", steps=10
            keywords = {k.arg: _constant(k.value) for k in node.keywords}
            steps += [keywords["steps"]] if "steps" in keywords else []
            presets += [keywords["preset"]] if "preset" in keywords else []
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "shape":
            assert int(np.prod(ast.literal_eval(node.value))) <= MAX_VOXELS
    assert steps and all(isinstance(s, int) and 0 < s <= MAX_STEPS for s in steps), steps
    assert presets and set(presets) == {"tiny"}, presets
    sources = {ast.unparse(node.func) for node in ast.walk(cls) if isinstance(node, ast.Call)}
    assert "phantom.make_case" in sources  # generated volumes, nothing downloaded
