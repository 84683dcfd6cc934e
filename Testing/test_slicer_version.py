"""The oldest Slicer the modules run in (5.10): declared in CMake, the README and the module help, and
checked when Slicer loads the modules, before anything that an older Slicer lacks is imported."""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts the module folders on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib import about  # noqa: E402

MODULES = ("SARSegmentation", "SARPretrain")
CHECK = "about.check_slicer(slicer.app.majorVersion, slicer.app.minorVersion)"


@pytest.mark.parametrize("major, minor, too_old", [(4, 13, True), (5, 8, True), (5, 9, True), (5, 10, False),
                                                    (5, 12, False), (6, 0, False)])
def test_slicer_too_old(major, minor, too_old):
    message = about.slicer_too_old(major, minor)
    assert bool(message) is too_old
    if too_old:
        assert f"this is Slicer {major}.{minor}" in message and f"3D Slicer {about.MINIMUM_SLICER} or newer" in message


def test_check_slicer_says_so_in_the_help_and_logs_once(caplog, monkeypatch):
    monkeypatch.setattr(about, "_reported", [])
    assert about.check_slicer(5, 12) == f"<p>Requires 3D Slicer {about.MINIMUM_SLICER} or newer.</p>"
    assert not caplog.records
    with caplog.at_level(logging.ERROR):
        first = about.check_slicer(5, 8)
        second = about.check_slicer(5, 8)  # the other module, loaded after the first
    assert first == second and f"<b>{about.slicer_too_old(5, 8)}</b>" in first
    assert [record.getMessage() for record in caplog.records] == [about.slicer_too_old(5, 8)]


def _module_level(path: Path) -> list[ast.stmt]:
    return ast.parse(path.read_text(encoding="utf-8")).body


@pytest.mark.parametrize("module", MODULES)
def test_each_module_checks_the_version_when_it_loads(module):
    """At module level (when Slicer loads the file), before the module's classes and before importing
    vtkMRMLMarkupsROINode (in MRML Core only since 5.10); the module help shows the result."""
    body = _module_level(ROOT / module / f"{module}.py")
    checks = [i for i, node in enumerate(body) if isinstance(node, ast.Assign)
              and [t.id for t in node.targets] == ["REQUIREMENTS"] and ast.unparse(node.value) == CHECK]
    assert len(checks) == 1, f"{module}.py: module-level REQUIREMENTS = {CHECK}"
    check = checks[0]
    first_class = min(i for i, node in enumerate(body) if isinstance(node, ast.ClassDef))
    roi = [i for i, node in enumerate(body) if isinstance(node, ast.ImportFrom)
           and "vtkMRMLMarkupsROINode" in {a.name for a in node.names}]
    assert check < first_class and all(check < i for i in roi)
    module_class = next(node for node in body if isinstance(node, ast.ClassDef) and node.name == module)
    help_text = next(node for node in ast.walk(module_class) if isinstance(node, ast.Assign)
                     and ast.unparse(node.targets[0]) == "self.parent.helpText")
    assert "REQUIREMENTS" in {n.id for n in ast.walk(help_text.value) if isinstance(n, ast.Name)}


def test_minimum_is_declared_in_the_readme():
    assert f"Requires **3D Slicer {about.MINIMUM_SLICER} or newer**" in (ROOT / "README.md").read_text(encoding="utf-8")
