"""Every Slicer, MRML, VTK, CTK and Qt name the modules use was found in Slicer's own source at v5.10.0 and
v5.12.3: the names are read from the code (``Testing/tools/slicer_names.py``) and each must be on the
checked list, ``Testing/slicer_names.json``, with the file it was found in at each tag.

After changing the modules, regenerate the list where the git mirrors are (Slicer, CTK, PythonQt,
SlicerPyTorch; see the script's --help)::

    python Testing/tools/slicer_names.py

A name found at no tag is printed and the script exits 1: fix the code. The VTK and MRML names are also
looked up in the ``slicer-core`` wheel installed here (a newer Slicer), which needs no mirror.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("slicer_names", ROOT / "Testing" / "tools" / "slicer_names.py")
names = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(names)

REGENERATE = "python Testing/tools/slicer_names.py"


@pytest.fixture(scope="module")
def checked() -> dict:
    return json.loads(names.LIST.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def used() -> dict:
    return names.used_names()


def test_every_name_the_modules_use_was_checked(used, checked):
    listed = {(entry["kind"], entry["name"]) for entry in checked["names"]}
    unchecked = [f"{kind}: {name} (in {', '.join(files)})" for (kind, name), files in used.items()
                 if (kind, name) not in listed]
    assert not unchecked, (f"not checked against Slicer's source: {unchecked}. Run `{REGENERATE}` where the "
                           "git mirrors are; it says where each name is found at each tag, or that it is not.")


def test_every_checked_name_was_found_at_each_tag(checked):
    assert set(names.TAGS) < set(checked["commits"])
    for tag in names.TAGS:
        assert re.fullmatch(r"[0-9a-f]{40}", checked["commits"][tag][tag])  # the tag's commit
        assert re.fullmatch(r"[0-9a-f]{40}", checked["commits"][tag]["CTK"])  # the CTK it builds
    for entry in checked["names"]:
        sources = ["SlicerPyTorch"] if entry["name"].startswith("PyTorchUtils") else list(names.TAGS)
        assert sorted(entry["found"]) == sorted(sources), entry
        missing = [source for source in sources if not entry["found"][source]]
        assert not missing, f"{entry['kind']} {entry['name']} was not found at {missing}: fix the code"
        assert all(re.match(r"^[^:]+: \S", found) for found in entry["found"].values()), entry  # "how: path"


def _resolve(root, dotted: str):
    value = root
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_mrml_and_vtk_names_exist_in_slicer_core(checked):
    """Independent of the mirrors: the MRML, VTK and slicer.util names resolve in the slicer-core wheel (a
    Slicer newer than 5.12.3, without the application or Qt), and every VTK-style member name (GetName) is a
    member of one of its classes."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    import vtk

    members = {member for module in (slicer, vtk) for name in dir(module) if name.startswith("vtk")
               for member in dir(getattr(module, name))}
    for entry in checked["names"]:  # submodules (vtk.util.numpy_support) are attributes once imported
        if entry["kind"] == names.IMPORT and re.match(r"^(slicer|vtk)\.", entry["name"]):
            with contextlib.suppress(ImportError):
                importlib.import_module(entry["name"])
    unknown = []
    for entry in checked["names"]:
        kind, name = entry["kind"], entry["name"]
        if kind == names.CLASS_NAME:
            ok = hasattr(slicer, name)
        elif kind in (names.IMPORT, names.ATTRIBUTE) and re.match(r"^(slicer\.(vtk\w+|util)|vtk)(\.|$)", name):
            try:
                _resolve({"slicer": slicer, "vtk": vtk}[name.split(".")[0]], name.split(".", 1)[1]) \
                    if "." in name else None
                ok = True
            except AttributeError:
                ok = False
        elif kind == names.MEMBER and name[0].isupper():
            ok = name in members
        else:
            continue
        if not ok:
            unknown.append(f"{kind}: {name}")
    assert not unknown, f"not in slicer-core's MRML or VTK: {unknown}"


# -- the extractor itself, on a small project of its own ------------------------------------------------

MODULE = '''
import logging
import subprocess
import qt
import slicer
from slicer import vtkMRMLSegmentationNode
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from MyLib import helper


class MyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = helper.Logic()
        self.ui = slicer.util.childWidgetVariables(slicer.util.loadUI(self.resourcePath("UI/x.ui")))
        self.ui.applyButton.enabled = False
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.layout.addWidget(qt.QLabel())
        self.logic.runThings()
        subprocess.Popen(["true"]).poll()
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode")
        node.GetTable().GetNumberOfColumns()
        logging.getLogger().isEnabledFor(10)
        super().enter()

    def onApply(self):
        with slicer.util.tryWithErrorDisplay("failed", waitCursor=True):
            self.ui.applyButton.toolTip = slicer.util.arrayFromVolume(None).astype("f").tolist()

    def runThings(self):
        pass
'''
UI = '''<ui version="4.0"><class>M</class>
 <widget class="qMRMLWidget" name="M">
  <layout class="QVBoxLayout" name="layout">
   <item><widget class="QPushButton" name="applyButton"><property name="text"><string>Apply</string></property>
    <property name="SlicerParameterName"><string>x</string></property></widget></item>
   <item><widget class="qMRMLNodeComboBox" name="box"><property name="nodeTypes">
    <stringlist><string>vtkMRMLScalarVolumeNode</string></stringlist></property></widget></item>
  </layout>
 </widget>
 <customwidgets><customwidget><class>qMRMLNodeComboBox</class><extends>QWidget</extends>
  <header>qMRMLNodeComboBox.h</header></customwidget></customwidgets>
 <connections><connection><sender>M</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>
  <receiver>box</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection></connections>
</ui>'''


def test_the_extractor_takes_slicer_names_and_leaves_the_rest(tmp_path):
    (tmp_path / "sarseg").mkdir()
    (tmp_path / "sarseg" / "mrml.py").write_text("def helper_in_engine():\n    pass\n")
    for module in names.MODULES:
        (tmp_path / module / f"{module}Lib").mkdir(parents=True)
        (tmp_path / module / "Resources" / "UI").mkdir(parents=True)
        (tmp_path / module / f"{module}Lib" / "__init__.py").write_text("")
        (tmp_path / module / f"{module}.py").write_text(MODULE)
        (tmp_path / module / "Resources" / "UI" / f"{module}.ui").write_text(UI)
    found = names.used_names(tmp_path)
    assert set(found) == {
        ("import", "qt"), ("import", "slicer"), ("import", "slicer.vtkMRMLSegmentationNode"),
        ("import", "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget"),
        ("import", "slicer.util.VTKObservationMixin"),
        ("attribute", "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.setup"),
        ("attribute", "slicer.util"), ("attribute", "slicer.util.childWidgetVariables"),
        ("attribute", "slicer.util.loadUI"), ("attribute", "slicer.util.tryWithErrorDisplay"),
        ("attribute", "slicer.util.arrayFromVolume"),
        ("keyword", "slicer.util.tryWithErrorDisplay(waitCursor=)"),
        # members of the Slicer base classes, reached through self
        *(("attribute", f"(slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget | "
                        f"slicer.util.VTKObservationMixin).{member}")
          for member in ("resourcePath", "layout", "layout.addWidget", "enter")),
        # members of .ui widgets, reached through self.ui
        ("attribute", "QPushButton.enabled"), ("attribute", "QPushButton.connect"),
        ("attribute", "QPushButton.toolTip"), ("signal or slot", "QPushButton.clicked()"),
        ("attribute", "qt.QLabel"), ("attribute", "slicer.mrmlScene"),
        ("attribute", "slicer.mrmlScene.AddNewNodeByClass"), ("class name in a string", "vtkMRMLTableNode"),
        # CamelCase members of objects of unknown type; not the project's own (runThings), Python's (Popen,
        # isEnabledFor: owners imported from outside Slicer) or numpy's (astype, lower case)
        ("member", "GetTable"), ("member", "GetNumberOfColumns"),
        # the .ui file
        ("ui class", "qMRMLWidget"), ("ui class", "QVBoxLayout"), ("ui class", "QPushButton"),
        ("ui class", "qMRMLNodeComboBox"), ("ui class", "QWidget"), ("ui header", "qMRMLNodeComboBox.h"),
        ("ui property", "QPushButton.text"), ("ui property", "QPushButton.SlicerParameterName"),
        ("ui property", "qMRMLNodeComboBox.nodeTypes"), ("class name in a string", "vtkMRMLScalarVolumeNode"),
        ("signal or slot", "qMRMLWidget.mrmlSceneChanged(vtkMRMLScene*)"),
        ("signal or slot", "qMRMLNodeComboBox.setMRMLScene(vtkMRMLScene*)"),
    }
    assert found[("member", "GetTable")] == ["SARPretrain/SARPretrain.py", "SARSegmentation/SARSegmentation.py"]
