"""The Slicer, MRML, VTK, CTK and Qt names the SAR modules use, and where Slicer's own source has them.

Two halves:

* :func:`used_names` reads this repository (no Slicer needed): the module files, their Lib packages,
  ``sarseg/mrml.py`` (Python, by AST) and the modules' ``.ui`` files (XML), and returns every name that
  comes from Slicer or the libraries it ships, keyed by ``(kind, name)``. ``Testing/test_slicer_names.py``
  checks each of them is in the checked list, ``Testing/slicer_names.json``.
* :func:`main` makes that list by searching Slicer's source at each tag in :data:`TAGS` (a git mirror of
  github.com/Slicer/Slicer), CTK at the commit each tag builds (``SuperBuild/External_CTK.cmake``),
  PythonQt's Qt wrappers (a last resort for Qt names no Slicer or CTK code uses) and SlicerPyTorch
  (``PyTorchUtils``); every name gets the file where it was found at each tag, and how (declared in a
  C++ header, defined in Slicer's Python, or, for VTK and Qt, whose sources Slicer does not hold, used the
  same way in Slicer's own code). Regenerate after changing the modules::

      python Testing/tools/slicer_names.py [--slicer GIT_DIR] [--ctk GIT_DIR] [--pythonqt GIT_DIR] [--pytorch GIT_DIR]

  (git directories of the mirrors; the defaults are this project's, under /work/.mirror). A name found at
  no tag is printed and the command exits 1: fix the code, not the list.

Names are taken where their owner is known (``slicer.util.loadUI``, ``qt.QTimer``, a member of a Slicer
base class reached through ``self``, a member of a ``.ui`` widget reached through ``self.ui``) and, for
objects of unknown type (a node, a combo box handed to a Lib class), every CamelCase member name this
project does not define itself (``GetName``, ``setCurrentNode``). Lowercase one-word members of objects of
unknown type (``text``, ``show``) cannot be told from Python's own and are not taken.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import unittest
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "Testing" / "slicer_names.json"
TAGS = ("v5.10.0", "v5.12.3")
MODULES = ("SARSegmentation", "SARPretrain")
EXTERNAL = {"slicer", "qt", "ctk", "vtk", "PyTorchUtils"}  # import roots whose names are checked
CLASS_STRING = re.compile(r"^(vtkMRML|vtkSlicer|qMRML|qSlicer)[A-Za-z0-9]+$")
SIGNATURE = re.compile(r"^[A-Za-z_]\w*\([\w:\s,*&<>]*\)$")
CAMEL = re.compile(r"[A-Z]")

# kinds of names
IMPORT, ATTRIBUTE, KEYWORD, MEMBER, CLASS_NAME, SIGNAL = (
    "import", "attribute", "keyword", "member", "class name in a string", "signal or slot")
UI_CLASS, UI_PROPERTY, UI_ENUM, UI_HEADER = "ui class", "ui property", "ui enum", "ui header"


def python_files(root: Path = ROOT) -> list[Path]:
    """The files whose names are checked: each module, its Lib package, and the engine's MRML adapter."""
    files = [root / "sarseg" / "mrml.py"]
    for module in MODULES:
        files.append(root / module / f"{module}.py")
        files.extend(sorted((root / module / f"{module}Lib").glob("*.py")))
    return files


def ui_files(root: Path = ROOT) -> dict[str, Path]:
    """Module file (relative) -> its .ui file."""
    return {f"{m}/{m}.py": root / m / "Resources" / "UI" / f"{m}.ui" for m in MODULES}


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# -- what this project defines itself ----------------------------------------------------------------

def project_names(root: Path = ROOT) -> set[str]:
    """Functions, classes, attributes set on ``self``, class-level fields, and .ui object names defined in
    the engine, the modules and their Lib packages: a member with one of these names may be the project's."""
    names: set[str] = set()
    sources = list((root / "sarseg").rglob("*.py")) + [p for m in MODULES for p in (root / m).rglob("*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names.update(s.target.id for s in node.body
                             if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name))
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_self(node.value):
                names.add(node.attr)
    for ui in ui_files(root).values():
        names.update(w.get("name") for w in ET.parse(ui).getroot().iter("widget"))
    return names


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


# -- names used in Python files ------------------------------------------------------------------------

class _Uses(ast.NodeVisitor):
    """Collects the external names of one Python file (see the module docstring)."""

    def __init__(self, path: str, own: set[str], widgets: dict[str, str]) -> None:
        self.path, self.own, self.widgets = path, own, widgets
        self.bindings: dict[str, str] = {}  # local name -> qualified name (any import, external or not)
        self.classes: list[tuple[str, ...]] = []  # Slicer bases of the enclosing classes
        self.own_in_class: list[set[str]] = []
        self.found: dict[tuple[str, str], set[str]] = defaultdict(set)

    def add(self, kind: str, name: str) -> None:
        self.found[(kind, name)].add(self.path)

    # imports bind names anywhere in the file (a later import inside a function binds the same name)
    def collect_imports(self, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self.bindings[local] = alias.name if alias.asname else alias.name.split(".")[0]
                    if alias.name.split(".")[0] in EXTERNAL:
                        self.add(IMPORT, alias.name)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                for alias in node.names:
                    qualified = f"{node.module}.{alias.name}"
                    self.bindings[alias.asname or alias.name] = qualified
                    if node.module.split(".")[0] in EXTERNAL:
                        self.add(IMPORT, qualified)
            elif isinstance(node, ast.ImportFrom):  # relative: the project's own
                for alias in node.names:
                    self.bindings[alias.asname or alias.name] = f".{alias.name}"

    def qualify(self, node: ast.AST) -> str | None:
        """The qualified name of an expression rooted in an import or a Slicer base class (``...()``
        after a call), None when its owner is unknown; names rooted outside EXTERNAL start with '-'."""
        if isinstance(node, ast.Name):
            name = self.bindings.get(node.id)
            if name is None:
                return None
            return name if name.split(".")[0] in EXTERNAL else "-" + name
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "super" and self.classes and self.classes[-1]:
                return _bases_name(self.classes[-1])
            inner = self.qualify(node.func)
            return inner + "()" if inner else None
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) and not CAMEL.search(node.attr)
                and not (isinstance(node.value.func, ast.Name) and node.value.func.id == "super")):
            return None  # e.g. an array's astype: a result's members are taken when CamelCase (Slicer's, VTK's, Qt's)
        if isinstance(node, ast.Attribute):
            if _is_self(node.value) and self.classes and self.classes[-1]:
                if node.attr in self.own_in_class[-1] or node.attr.startswith("__"):
                    return None
                if "slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest" in self.classes[-1] and hasattr(
                        unittest.TestCase, node.attr):
                    return "-unittest.TestCase." + node.attr  # Python's own
                return f"{_bases_name(self.classes[-1])}.{node.attr}"
            if (isinstance(node.value, ast.Attribute) and node.value.attr == "ui" and _is_self(node.value.value)
                    and node.attr in self.widgets):
                return "ui:" + self.widgets[node.attr]
            inner = self.qualify(node.value)
            return f"{inner}.{node.attr}" if inner else None
        return None

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        bases = tuple(q for q in (self.qualify(b) for b in node.bases) if q and not q.startswith("-"))
        own = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        own |= {t.attr for n in ast.walk(node) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and _is_self(t.value)}
        self.classes.append(bases)
        self.own_in_class.append(own)
        self.generic_visit(node)
        self.classes.pop()
        self.own_in_class.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        qualified = self.qualify(node)
        if qualified is not None:
            if qualified.startswith("ui:") and "." in qualified:  # a member of a .ui widget
                self.add(ATTRIBUTE, qualified[3:])
            elif not qualified.startswith(("-", "ui:")):  # (the widget itself is test_packaging's)
                self.add(ATTRIBUTE, qualified)
        elif (CAMEL.search(node.attr) and node.attr not in self.own and not node.attr.startswith("_")
              and self.qualify(node.value) is None):
            self.add(MEMBER, node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        qualified = self.qualify(node.func)
        if qualified and not qualified.startswith("-"):
            for keyword in node.keywords:
                if keyword.arg:
                    self.add(KEYWORD, f"{qualified.replace('ui:', '', 1)}({keyword.arg}=)")
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "connect" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and SIGNATURE.match(node.args[0].value)):
            owner = self.qualify(node.func.value) or ""
            self.add(SIGNAL, (owner[3:] + "." if owner.startswith("ui:") else "") + node.args[0].value)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and CLASS_STRING.match(node.value):
            self.add(CLASS_NAME, node.value)


def _bases_name(bases: tuple[str, ...]) -> str:
    """How a member reached through ``self`` of a class with these Slicer bases is named."""
    return bases[0] if len(bases) == 1 else "(" + " | ".join(bases) + ")"


def _ui_widgets(ui: Path) -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ET.parse(ui).getroot().iter("widget")}


def _ui_names(ui: Path, path: str) -> dict[tuple[str, str], set[str]]:
    """Classes, properties (per class), enum values, custom widget headers and connected signals/slots."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    root = ET.parse(ui).getroot()
    for element in root.iter():
        if element.tag in ("widget", "layout"):
            cls = element.get("class")
            found[(UI_CLASS, cls)].add(path)
            for child in element:
                if child.tag in ("property", "attribute"):
                    found[(UI_PROPERTY, f"{cls}.{child.get('name')}")].add(path)
                    for value in child.iter():
                        if value.tag in ("enum", "set"):
                            for item in value.text.split("|"):
                                found[(UI_ENUM, item.strip())].add(path)
                        elif value.tag == "string" and CLASS_STRING.match(value.text or ""):  # e.g. nodeTypes
                            found[(CLASS_NAME, value.text)].add(path)
    for custom in root.iter("customwidget"):
        found[(UI_CLASS, custom.findtext("extends"))].add(path)
        found[(UI_HEADER, custom.findtext("header"))].add(path)
    classes = {w.get("name"): w.get("class") for w in root.iter("widget")}
    for connection in root.iter("connection"):
        found[(SIGNAL, f"{classes[connection.findtext('sender')]}.{connection.findtext('signal')}")].add(path)
        found[(SIGNAL, f"{classes[connection.findtext('receiver')]}.{connection.findtext('slot')}")].add(path)
    return found


def used_names(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """``(kind, name) -> files using it`` over :func:`python_files` and the modules' .ui files."""
    own = project_names(root)
    uis = ui_files(root)
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in python_files(root):
        relative = _relative(path, root)
        widgets = _ui_widgets(uis[relative]) if relative in uis else {}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses = _Uses(relative, own, widgets)
        uses.collect_imports(tree)
        uses.visit(tree)
        for key, files in uses.found.items():
            found[key] |= files
    for ui in uis.values():
        for key, files in _ui_names(ui, _relative(ui, root)).items():
            found[key] |= files
    return {key: sorted(files) for key, files in sorted(found.items())}


# -- where Slicer's source has them (needs the git mirrors) --------------------------------------------

TEXT = (".h", ".py", ".cxx", ".cpp", ".txx", ".ui")
CODE = (".py", ".cxx", ".cpp", ".h", ".txx")
# what a qualified prefix is: the C++ classes (or PythonQt decorators) to look in first
HINTS = {
    "slicer.app": ("qSlicerApplication", "qSlicerCoreApplication", "qSlicerBaseQTCorePythonQtDecorators"),
    "slicer.app.commandOptions()": ("qSlicerCommandOptions", "qSlicerCoreCommandOptions"),
    "slicer.mrmlScene": ("vtkMRMLScene",),
    "slicer.modules.plots": ("qSlicerPlotsModule", "qSlicerAbstractCoreModule"),
    "slicer.modules.plots.logic()": ("vtkSlicerPlotsLogic",),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModule.parent": (
        "qSlicerScriptedLoadableModule", "qSlicerAbstractCoreModule"),
    "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget.parent": (
        "qSlicerScriptedLoadableModuleWidget", "qSlicerAbstractModuleWidget"),
}
PACKAGES = {"slicer.util": ("Base/Python/slicer/util.py",),
            "slicer.ScriptedLoadableModule": ("Base/Python/slicer/ScriptedLoadableModule.py",),
            "slicer.parameterNodeWrapper": ("Base/Python/slicer/parameterNodeWrapper/",),
            "PyTorchUtils": ("PyTorchUtils/PyTorchUtils.py",)}
SLICER_GLOBALS = ("app", "mrmlScene", "modules")  # documented in Base/Python/slicer/__init__.py
PYTHONQT_WRAPPERS = "generated_cpp_511/"  # Qt's API as PythonQt wraps it (the mirror's newest branch)


class Source:
    """The text files of git revisions (``parts``: git directory, revision, path prefix, paths kept), with
    an index of the identifiers each file holds."""

    def __init__(self, label: str, parts: list[tuple[str, str, str, str]]) -> None:
        self.label = label
        self.commits: dict[str, str] = {}
        self.files: dict[str, str] = {}
        for git_dir, revision, prefix, under in parts:
            commit = _git(git_dir, "rev-parse", f"{revision}^{{commit}}").strip()
            self.commits[prefix.rstrip("/") or label] = commit
            self.files.update({prefix + path: text for path, text in _read_tree(git_dir, commit, under).items()})
        self.tokens: dict[str, set[str]] = defaultdict(set)
        for path, text in self.files.items():
            for token in set(re.findall(r"[A-Za-z_]\w*", text)):
                self.tokens[token].add(path)
        self._ui_properties: dict[str, dict[str, str]] | None = None
        self._headers: dict[str, str] | None = None

    def grep(self, pattern: str, token: str, suffixes: tuple[str, ...] = TEXT, within: tuple[str, ...] = ()) -> str | None:
        """The first file (in path order) holding identifier ``token`` whose text matches ``pattern``."""
        regex = re.compile(pattern, re.M)
        for path in sorted(self.tokens.get(token, ())):
            if path.endswith(suffixes) and (not within or path.startswith(within)) and regex.search(self.files[path]):
                return path
        return None

    def header(self, cls: str) -> str | None:
        """The header named after class ``cls`` (first in path order)."""
        if self._headers is None:
            self._headers = {}
            for path in sorted(p for p in self.files if p.endswith(".h")):
                self._headers.setdefault(path.rpartition("/")[2][:-2], path)
        return self._headers.get(cls)

    def ui_properties(self) -> dict[str, dict[str, str]]:
        """Widget or layout class -> property -> the first of Slicer's (and CTK's) .ui files setting it."""
        if self._ui_properties is None:
            self._ui_properties = defaultdict(dict)
            for path in sorted(p for p in self.files if p.endswith(".ui")):
                try:
                    root = ET.fromstring(self.files[path])
                except ET.ParseError:
                    continue
                for element in root.iter():
                    if element.tag in ("widget", "layout"):
                        for child in element:
                            if child.tag in ("property", "attribute"):
                                self._ui_properties[element.get("class")].setdefault(child.get("name"), path)
        return self._ui_properties


def _git(git_dir: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", git_dir, *args], capture_output=True, text=True, check=True).stdout


def _read_tree(git_dir: str, commit: str, under: str = "") -> dict[str, str]:
    """Path -> text of every file of ``commit`` (below ``under``) ending in one of :data:`TEXT`."""
    paths = [p for p in _git(git_dir, "ls-tree", "-r", "--name-only", commit).splitlines()
             if p.endswith(TEXT) and p.startswith(under)]
    request = "".join(f"{commit}:{p}\n" for p in paths).encode()
    out = subprocess.run(["git", "--git-dir", git_dir, "cat-file", "--batch"], input=request,
                         capture_output=True, check=True).stdout
    files, position = {}, 0
    for path in paths:
        header_end = out.index(b"\n", position)
        size = int(out[position:header_end].split()[2])
        files[path] = out[header_end + 1:header_end + 1 + size].decode("utf-8", "replace")
        position = header_end + 1 + size + 1
    return files


def _declared(source: Source, name: str, headers: tuple[str, ...] = (), anywhere: bool = True) -> str | None:
    """A header declaring member ``name`` (a method, Q_PROPERTY, enum value, or a VTK Get/Set/On/Off macro):
    one of ``headers`` (paths) when they declare it, else (``anywhere``) any header of ``source``."""
    stem = re.sub(r"^(Get|Set)|(On|Off)$", "", name)
    patterns = [(rf"^[ \t]*(?:(?:virtual|static|inline|Q_INVOKABLE|Q_SLOT|explicit)\s+)*[\w:<>,*& \t]*?[ \t*&]{name}\s*\(",
                 name),
                (rf"Q_PROPERTY\(\s*[\w:<>*\s]+?[\s*]{name}\s+(?:READ|MEMBER)", name),
                (rf"^[ \t]*{name}\s*(?:=[^=]|,|$)", name)]
    if stem != name:
        macro = "Get" if name.startswith("Get") else "Set" if name.startswith("Set") else "Boolean"
        patterns.append((rf"vtk{macro}\w*Macro\(\s*{stem}\s*[,)]", stem))
    scopes = ([headers] if headers else []) + ([()] if anywhere else [])
    for scope in scopes:
        for pattern, token in patterns:
            found = source.grep(pattern, token, (".h",), within=scope)
            if found:
                return found
    return None


def _class_block(text: str, cls: str) -> str:
    """The body of Python class ``cls`` in ``text`` (to the next top-level statement)."""
    match = re.search(rf"^class {cls}\b.*?(?=^\S)", text + "\nEND", re.M | re.S)
    return match.group(0) if match else ""


def _python(source: Source, files: tuple[str, ...], name: str, cls: str = "") -> str | None:
    """A def, class or assignment of ``name`` (inside class ``cls`` when given) in the Python ``files``."""
    pattern = re.compile(rf'^\s*(?:def {name}\(|class {name}\b|{name}\s*=|self\.{name}\s*=)|[sS]etAttr\(\w+, "{name}"',
                         re.M)
    for path in sorted(p for p in source.tokens.get(name, ()) if p.endswith(".py") and p.startswith(files)
                       and "/tests/" not in p):
        text = _class_block(source.files[path], cls) if cls else source.files[path]
        if pattern.search(text):
            return path
    return None


def _used(source: Source, name: str, suffixes: tuple[str, ...] = CODE) -> str | None:
    """Slicer's (or CTK's) own code using ``name`` as a member: ``.name`` or ``->name(``."""
    return source.grep(rf"(?:\.|->){name}\b", name, suffixes)


def _keyword(source: Source, function: str, keyword: str) -> str | None:
    """The Python def of ``function`` (qualified) naming parameter ``keyword``, or taking ``**kwargs`` that
    Slicer's own code passes it in."""
    owner, _, name = function.rpartition(".")
    cls = owner.rpartition(".")[2].rstrip("()") if owner.endswith("()") else ""
    package = owner.rstrip("()").rpartition(".")[0] if cls else owner
    for path in sorted(p for p in source.tokens.get(name, ()) if p.endswith(".py") and p.startswith(PACKAGES[package])):
        text = _class_block(source.files[path], cls) if cls else source.files[path]
        signature = re.search(rf"^\s*def {name}\((.*?)\)\s*(?:->[^:]*)?:", text, re.M | re.S)
        if signature and re.search(rf"\b{keyword}\b", signature.group(1)):
            return path
        if signature and "**" in signature.group(1):
            caller = source.grep(rf"\b{name}\([^()]*(?:\([^()]*\)[^()]*)*\b{keyword}=", keyword, (".py",))
            if caller:
                return f"{path} (**kwargs), called so in {caller}"
    return None


def _say(how: str, path: str | None) -> str | None:
    return f"{how}: {path}" if path else None


def _qt_member(source: Source, cls: str, member: str) -> str | None:
    """A member of Qt class ``cls`` (Qt's source is not Slicer's): a .ui file of Slicer's setting it on that
    class, Slicer's Python or C++ using it, or PythonQt's wrapper of it."""
    return (_say(f"set on a {cls} in", source.ui_properties().get(cls, {}).get(member))
            or _say("used in", _used(source, member, (".py",)))
            or _say("used in", _used(source, member, (".cxx", ".cpp", ".txx")))
            or _say("wrapped in", _declared(source, member)))


def _signal(source: Source, name: str) -> str | None:
    """``Class.signal(args)`` or ``signal(args)``: declared in a Slicer/CTK class's header with these
    argument types, or (Qt's) connected so in Slicer's code or .ui files."""
    owner, _, signature = name.rpartition(".") if "." in name.partition("(")[0] else ("", "", name)
    signal, _, args = signature.partition("(")
    args = args.rstrip(")")
    arg_pattern = r"\s*,\s*".join(re.escape(a.strip()).replace(r"\*", r"\s*\*") + r"\s*\w*" for a in args.split(",")
                                  if a.strip())
    declaration = rf"\bvoid\s+{signal}\s*\(\s*{arg_pattern}\s*\)"
    header = source.header(owner) if owner and not owner.startswith("Q") else None
    return (_say("declared in", source.grep(declaration, signal, (".h",), within=(header,)) if header else None)
            or (_say("declared in", source.grep(declaration, signal, (".h",))) if not owner.startswith("Q") else None)
            or _say("connected so in", source.grep(rf'"{re.escape(signature)}"|SIGNAL\({re.escape(signature)}\)|'
                                                   rf"<signal>{re.escape(signature)}</signal>", signal, TEXT)))


def evidence(source: Source, kind: str, name: str) -> str | None:
    """``how: path`` for one name in one source, or None."""
    if kind == KEYWORD:
        function, keyword = re.match(r"^(.*)\((\w+)=\)$", name).groups()
        return _say("parameter of the def in", _keyword(source, function, keyword))
    if kind in (CLASS_NAME, UI_HEADER) or (kind == UI_CLASS and not name.startswith("Q")):
        return _say("class declared in", source.header(name[:-2] if kind == UI_HEADER else name))
    if kind == UI_CLASS:
        return _say("used in", source.grep(rf'class="{name}"', name, (".ui",)))
    if kind == UI_ENUM:
        cls, _, value = name.partition("::")
        header = source.header(cls)
        return ((_say("declared in", _declared(source, value, (header,), False)) if header else None)
                or _say("used in", source.grep(re.escape(name), value)))
    if kind == UI_PROPERTY:
        cls, _, prop = name.partition(".")
        if prop == "SlicerParameterName":
            return _say("read by", source.grep(r'"SlicerParameterName"', prop, (".py",)))
        header = source.header(cls) if not cls.startswith("Q") else None
        setter = "set" + prop[0].upper() + prop[1:]
        return ((_say("declared in", _declared(source, prop, (header,), False)) if header else None)
                or _say(f"set on a {cls} in", source.ui_properties().get(cls, {}).get(prop))
                or _say(f"its setter {setter} used in", source.grep(rf"(?:\.|->){setter}\(", setter, CODE))
                or _say("wrapped in", _declared(source, prop)))
    if kind == SIGNAL:
        return _signal(source, name)
    if kind == MEMBER:
        if name[0].islower():  # Qt's and Slicer's Python convention (setCurrentNode, connectGui)
            return (_say("defined in", _python(source, ("Base/Python/slicer/",), name))
                    or _say("used in", _used(source, name, (".py",))) or _say("declared in", _declared(source, name))
                    or _say("used in", _used(source, name)))
        return (_say("declared in", _declared(source, name))  # VTK's and MRML's (GetName)
                or _say("used in", _used(source, name)))
    return _qualified(source, name)


def _qualified(source: Source, name: str) -> str | None:
    """An import or attribute: ``slicer.util.loadUI``, ``qt.QTimer``, ``vtk.vtkCommand.ModifiedEvent``,
    ``QLabel.text`` (a member of a .ui widget), ``(A | B).m`` (a member of Slicer base classes A, B)."""
    if name.startswith("("):
        bases, _, rest = name[1:].partition(").")
        return next(filter(None, (_qualified(source, f"{base}.{rest}") for base in bases.split(" | "))), None)
    if name in PACKAGES:
        return _say("module", next((p for p in sorted(source.files) if p.startswith(PACKAGES[name])), None))
    owner, _, member = name.rpartition(".")
    head = name.split(".")[0]
    if not owner:  # slicer, qt, vtk, ctk: Python packages of Slicer's
        return _say("imported in", source.grep(rf"^\s*import {name}\b", name, (".py",)))
    if owner == "slicer" and member in SLICER_GLOBALS:
        return _say("documented in", source.grep(rf"py:attribute:: {member}\b", member, (".py",)))
    if owner == "slicer.modules":  # a module's name in lower case: the module's folder
        match = next((re.match(rf"Modules/\w+/{member}/", p, re.I) for p in sorted(source.files)
                      if re.match(rf"Modules/\w+/{member}/", p, re.I)), None)
        return _say("module folder", match.group(0) if match else None)
    for package, files in PACKAGES.items():
        if owner == package:
            return _say("defined in", _python(source, files, member))
        if owner.startswith(package + ".") and owner.count(".") == package.count(".") + 1:
            return _say("defined in", _python(source, files, member, owner.rpartition(".")[2].rstrip("()")))
    if head in ("qt", "vtk"):  # qt.QTimer, vtk.vtkCommand.ModifiedEvent: Slicer's code uses them so
        cls = owner.rpartition(".")[2]
        cxx = rf"|\b{cls}::{member}\b" if owner != head else ""
        return _say("used in", source.grep(rf"\b{re.escape(name)}\b{cxx}", member, CODE))
    if head in ("slicer", "ctk") and owner == head:  # slicer.vtkMRMLSegmentationNode: a wrapped class
        return _say("class declared in", source.header(member))
    if owner.startswith("Q") and "." not in owner:  # a member of a .ui widget of a Qt class
        return _qt_member(source, owner, member)
    cls = owner.rpartition(".")[2].rstrip("()")
    hints = HINTS.get(owner) or ((cls,) if re.match(r"^(vtk|q|ctk)[A-Z]", cls) else ())
    headers = tuple(filter(None, (source.header(h) for h in hints)))
    if headers:
        return (_say("declared in", _declared(source, member, headers, False))
                or _say("used in", source.grep(rf"\b{re.escape(name)}\b", member, CODE))
                or _say("declared in", _declared(source, member)))
    if ".ScriptedLoadableModule" in owner:  # self.layout.addWidget in a module widget: Slicer's modules do it too
        attribute = "self." + name.split(".", 3)[3]
        return _say("used as " + attribute + " in", source.grep(rf"\b{re.escape(attribute)}\b", member, (".py",)))
    return _say("declared in", _declared(source, member)) or _say("used in", _used(source, member))


def _ctk_commit(slicer_git: str, tag: str) -> str:
    """The CTK commit Slicer ``tag`` builds (``SuperBuild/External_CTK.cmake``)."""
    text = _git(slicer_git, "show", f"{tag}:SuperBuild/External_CTK.cmake")
    return re.search(r'_GIT_TAG\s*"([0-9a-f]{40})"', text).group(1)


def build(slicer_git: str, ctk_git: str, pythonqt_git: str, pythonqt_revision: str, pytorch_git: str) -> dict:
    """The checked list: every used name with where it was found at each tag (None where it was not)."""
    pythonqt = (pythonqt_git, pythonqt_revision, "PythonQt/", PYTHONQT_WRAPPERS)
    sources = {}
    for tag in TAGS:
        ctk = _ctk_commit(slicer_git, tag)
        sources[tag] = Source(tag, [(slicer_git, tag, "", ""), (ctk_git, ctk, "CTK/", ""), pythonqt])
    pytorch = Source("SlicerPyTorch", [(pytorch_git, "HEAD", "", "")])
    names = []
    for (kind, name), files in used_names().items():
        where = [pytorch] if name.startswith("PyTorchUtils") else [sources[tag] for tag in TAGS]
        names.append({"kind": kind, "name": name,
                      "found": {source.label: evidence(source, kind, name) for source in where},
                      "used in": files})
    return {"about": ("Made by Testing/tools/slicer_names.py from the commits below and checked by "
                      "Testing/test_slicer_names.py; regenerate it with that script, do not edit it by hand. "
                      "Paths are in Slicer's tree, in CTK's (CTK/: the commit the tag builds) or in PythonQt's "
                      f"Qt wrappers (PythonQt/{PYTHONQT_WRAPPERS}, the mirror's {pythonqt_revision}: the revisions "
                      "Slicer builds are not in it; used only for Qt names Slicer's and CTK's code never use)."),
            "commits": {**{tag: sources[tag].commits for tag in TAGS}, "SlicerPyTorch": pytorch.commits},
            "names": names}


def main(argv: list[str] | None = None) -> int:
    mirrors = Path("/work/.mirror")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slicer", default=str(mirrors / "Slicer+Slicer" / "repo"),
                        help="git directory of github.com/Slicer/Slicer, with the tags " + ", ".join(TAGS))
    parser.add_argument("--ctk", default=str(mirrors / "commontk+CTK" / "repo"), help="git directory of commontk/CTK")
    parser.add_argument("--pythonqt", default=str(mirrors / "commontk+PythonQt" / "repo"),
                        help="git directory of commontk/PythonQt")
    parser.add_argument("--pythonqt-revision", default="patched-9", help="its revision (default: %(default)s)")
    parser.add_argument("--pytorch", default=str(mirrors / "fepegar+SlicerPyTorch" / "repo"),
                        help="git directory of fepegar/SlicerPyTorch (PyTorchUtils)")
    parser.add_argument("--out", default=str(LIST), help="the list to write (default: %(default)s)")
    args = parser.parse_args(argv)
    checked = build(args.slicer, args.ctk, args.pythonqt, args.pythonqt_revision, args.pytorch)
    Path(args.out).write_text(json.dumps(checked, indent=1) + "\n", encoding="utf-8")
    missing = [entry for entry in checked["names"] if not all(entry["found"].values())]
    print(f"{len(checked['names'])} names, {len(missing)} not found at every tag; written to {args.out}")
    for entry in missing:
        print(f"  {entry['kind']}: {entry['name']} {entry['found']} (used in {', '.join(entry['used in'])})")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
