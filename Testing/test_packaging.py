"""Consistency checks for the Slicer extension packaging files.

The extension metadata lives in three places that must agree:

* ``CMakeLists.txt``      -- ``set(EXTENSION_XXX "...")`` entries,
* ``SARExtension.s4ext``  -- legacy ExtensionsIndex description file,
* ``SARExtension.json``   -- current ExtensionsIndex catalog entry.

The small parsers below are kept generic (``cmake_sets``, ``cmake_calls``) so
further tests, e.g. "every module .py/.ui/icon is listed in its module's
CMakeLists.txt", can reuse them.
"""

import json
import re
import runpy
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CMAKELISTS = ROOT / "CMakeLists.txt"
S4EXT = ROOT / "SARExtension.s4ext"
CATALOG_JSON = ROOT / "SARExtension.json"
ICON = ROOT / "Resources" / "Icons" / "SARExtension.png"
LICENSE = ROOT / "LICENSE"
MODULE_DIRS = ("SARSegmentation", "SARPretrain")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------

_CMAKE_CALL_RE = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.ASCII)
_CMAKE_ARG_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s"()]+)', re.DOTALL)


def strip_cmake_comments(text):
    """Remove ``# ...`` line comments that are not inside quoted arguments."""
    out = []
    for line in text.splitlines():
        in_quote = False
        escaped = False
        cut = len(line)
        for i, ch in enumerate(line):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = not in_quote
            elif ch == "#" and not in_quote:
                cut = i
                break
        out.append(line[:cut])
    return "\n".join(out)


def cmake_calls(path, command=None):
    """Return ``[(command, [args...]), ...]`` for the CMake file at ``path``.

    Quoted arguments are returned without their quotes (``""`` gives ``""``).
    Command names are lower-cased; pass ``command`` to keep only that one.
    Nested parentheses inside arguments are not supported (not needed for
    the plain ``set``/``add_subdirectory``/module list files we write).
    """
    text = strip_cmake_comments(Path(path).read_text(encoding="utf-8"))
    calls = []
    pos = 0
    while True:
        m = _CMAKE_CALL_RE.search(text, pos)
        if not m:
            break
        depth = 1
        i = m.end()
        in_quote = False
        while i < len(text) and depth:
            ch = text[i]
            if ch == "\\" and in_quote:
                i += 1
            elif ch == '"':
                in_quote = not in_quote
            elif not in_quote and ch == "(":
                depth += 1
            elif not in_quote and ch == ")":
                depth -= 1
            i += 1
        body = text[m.end() : i - 1]
        args = [
            a.group(1) if a.group(1) is not None else a.group(2)
            for a in _CMAKE_ARG_RE.finditer(body)
        ]
        name = m.group(1).lower()
        if command is None or name == command.lower():
            calls.append((name, args))
        pos = i
    return calls


def cmake_sets(path):
    """Return ``{VARIABLE: value}`` for every ``set(VARIABLE ...)`` in ``path``.

    A single value is returned as a string, several values as a list of
    strings (e.g. ``set(MODULE_PYTHON_SCRIPTS a.py b.py)``), no value as "".
    """
    result = {}
    for _, args in cmake_calls(path, "set"):
        if not args:
            continue
        name, values = args[0], args[1:]
        if len(values) == 1:
            result[name] = values[0]
        elif not values:
            result[name] = ""
        else:
            result[name] = values
    return result


def read_s4ext(path):
    """Parse a ``.s4ext`` file: first token is the key, the rest the value."""
    result = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        result[key.lower()] = value.strip()
    return result


def read_catalog_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def png_size(path):
    """Return ``(width, height)`` from a PNG's IHDR chunk; raise if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def depends_list(value):
    """Normalise a depends value (CMake/s4ext: space/semicolon list or "NA")."""
    if isinstance(value, list):
        items = value
    else:
        items = re.split(r"[;\s]+", value.strip())
    return [item for item in items if item and item != "NA"]


def strip_git_suffix(url):
    return url[: -len(".git")] if url.endswith(".git") else url


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cmake():
    return cmake_sets(CMAKELISTS)


@pytest.fixture(scope="module")
def s4ext():
    return read_s4ext(S4EXT)


@pytest.fixture(scope="module")
def catalog():
    return read_catalog_json(CATALOG_JSON)


# ---------------------------------------------------------------------------
# Helper self-checks
# ---------------------------------------------------------------------------


def test_cmake_sets_parses_lists_and_quotes(tmp_path):
    f = tmp_path / "CMakeLists.txt"
    f.write_text(
        'set(A "x (y) # not a comment")  # a comment\n'
        "set(B\n  one.py\n  two.py\n  )\n"
        'set(C "")\n'
        "set(D)\n",
        encoding="utf-8",
    )
    sets = cmake_sets(f)
    assert sets == {"A": "x (y) # not a comment", "B": ["one.py", "two.py"], "C": "", "D": ""}


# ---------------------------------------------------------------------------
# Top-level CMakeLists.txt
# ---------------------------------------------------------------------------


def test_cmake_project_and_structure():
    calls = cmake_calls(CMAKELISTS)
    names = [name for name, _ in calls]
    assert names[0] == "cmake_minimum_required"
    assert ("project", ["SARExtension"]) in calls
    minimum = runpy.run_path(str(ROOT / "SARSegmentation" / "SARSegmentationLib" / "about.py"))["MINIMUM_SLICER"]
    assert ("find_package", ["Slicer", minimum, "REQUIRED"]) in calls  # older Slicers fail to configure
    includes = [args[0] for name, args in calls if name == "include"]
    assert includes == [
        "${Slicer_USE_FILE}",
        "${Slicer_EXTENSION_GENERATE_CONFIG}",
        "${Slicer_EXTENSION_CPACK}",
    ]
    subdirs = [args[0] for name, args in calls if name == "add_subdirectory"]
    assert subdirs == list(MODULE_DIRS)


def test_cmake_module_subdirectories_guarded_and_present():
    text = strip_cmake_comments(CMAKELISTS.read_text(encoding="utf-8"))
    for module in MODULE_DIRS:
        assert (ROOT / module).is_dir(), module
        guard = f"if(EXISTS ${{CMAKE_CURRENT_SOURCE_DIR}}/{module}/CMakeLists.txt)"
        assert guard in text, guard


def test_cmake_extension_metadata(cmake):
    homepage = cmake["EXTENSION_HOMEPAGE"]
    assert homepage.startswith("https://github.com/")
    assert cmake["EXTENSION_CATEGORY"] == "Segmentation"
    assert cmake["EXTENSION_CONTRIBUTORS"]
    assert "Scale-Aware Restoration" in cmake["EXTENSION_DESCRIPTION"]
    assert depends_list(cmake["EXTENSION_DEPENDS"]) == ["PyTorch"]
    assert cmake["EXTENSION_SCREENSHOTURLS"] == ""
    raw = homepage.replace("https://github.com/", "https://raw.githubusercontent.com/", 1)
    assert cmake["EXTENSION_ICONURL"] == f"{raw}/main/Resources/Icons/SARExtension.png"


# ---------------------------------------------------------------------------
# s4ext and catalog JSON agree with CMakeLists.txt
# ---------------------------------------------------------------------------


def test_s4ext_agrees_with_cmake(cmake, s4ext):
    assert s4ext["scm"] == "git"
    assert strip_git_suffix(s4ext["scmurl"]) == cmake["EXTENSION_HOMEPAGE"]
    assert s4ext["scmrevision"] == "main"
    assert s4ext["build_subdirectory"] == "."
    assert s4ext["homepage"] == cmake["EXTENSION_HOMEPAGE"]
    assert s4ext["category"] == cmake["EXTENSION_CATEGORY"]
    assert s4ext["contributors"] == cmake["EXTENSION_CONTRIBUTORS"]
    assert s4ext["iconurl"] == cmake["EXTENSION_ICONURL"]
    assert s4ext["description"] == cmake["EXTENSION_DESCRIPTION"]
    assert s4ext["screenshoturls"] == cmake["EXTENSION_SCREENSHOTURLS"]
    assert depends_list(s4ext["depends"]) == depends_list(cmake["EXTENSION_DEPENDS"])
    assert s4ext["enabled"] == "1"


def test_catalog_json_agrees_with_cmake_and_s4ext(cmake, s4ext, catalog):
    assert catalog["category"] == cmake["EXTENSION_CATEGORY"] == s4ext["category"]
    assert strip_git_suffix(catalog["scm_url"]) == cmake["EXTENSION_HOMEPAGE"]
    assert catalog["scm_url"] == s4ext["scmurl"]
    assert catalog["scm_revision"] == s4ext["scmrevision"]
    assert catalog["build_subdirectory"] == s4ext["build_subdirectory"]
    assert catalog["build_dependencies"] == depends_list(cmake["EXTENSION_DEPENDS"])
    assert catalog.get("enabled", True) == (s4ext["enabled"] == "1")


# ---------------------------------------------------------------------------
# Icon and license
# ---------------------------------------------------------------------------


def test_icon_is_128_png(cmake):
    assert ICON.is_file()
    assert png_size(ICON) == (128, 128)
    # The published icon URL points at this file in the repository.
    assert cmake["EXTENSION_ICONURL"].endswith("/" + ICON.relative_to(ROOT).as_posix())


def test_license_is_apache_2():
    text = LICENSE.read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "http://www.apache.org/licenses/" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert "Copyright 2026 SARExtension developers" in text


# ---------------------------------------------------------------------------
# Scripted modules: every file is listed, and the engine ships with them
# ---------------------------------------------------------------------------

import ast  # noqa: E402
import py_compile  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

ENGINE_DIR = ROOT / "sarseg"
ENGINE_MODULE = "SARSegmentation"  # the module whose CMakeLists.txt ships the engine
LIB_PACKAGES = {f"{m}Lib" for m in MODULE_DIRS}
# What a module file may import when Slicer loads it: the standard library, what Slicer itself
# provides (its Python packages and compiled wrappers), and the modules' own Lib packages.
SLICER_PROVIDED = {"slicer", "qt", "ctk", "vtk", "MRMLCorePython", "MRMLLogicPython"}
DEFERRED = {"sarseg", "torch", "monai", "safetensors", "scipy", "numpy", "SimpleITK"}


def _module_sets(module):
    sets = cmake_sets(ROOT / module / "CMakeLists.txt")
    name = sets.get("MODULE_NAME")

    def listed(variable):
        values = sets.get(variable, [])
        values = [values] if isinstance(values, str) else list(values)
        return [v.replace("${MODULE_NAME}", name) for v in values if v]

    return name, listed


def _resolve(module, relative):
    return (ROOT / module / relative).resolve()


def _files(folder, suffixes):
    return sorted(p.resolve() for p in folder.rglob("*")
                  if p.is_file() and p.suffix in suffixes and "__pycache__" not in p.parts)


@pytest.mark.parametrize("module", MODULE_DIRS)
def test_module_cmake_lists_every_file(module):
    name, listed = _module_sets(module)
    assert name == module
    scripts = [_resolve(module, s) for s in listed("MODULE_PYTHON_SCRIPTS")]
    resources = [_resolve(module, r) for r in listed("MODULE_PYTHON_RESOURCES")]
    missing = [str(p.relative_to(ROOT)) for p in scripts + resources if not p.is_file()]
    assert not missing, f"{module}/CMakeLists.txt lists files that do not exist: {missing}"
    assert len(set(scripts)) == len(scripts) and len(set(resources)) == len(resources)
    folder = ROOT / module
    unlisted = [str(p.relative_to(ROOT)) for p in _files(folder, {".py"}) if p not in scripts]
    assert not unlisted, f"add to MODULE_PYTHON_SCRIPTS in {module}/CMakeLists.txt: {unlisted}"
    unlisted = [str(p.relative_to(ROOT)) for p in _files(folder, {".ui", ".png", ".svg"}) if p not in resources]
    assert not unlisted, f"add to MODULE_PYTHON_RESOURCES in {module}/CMakeLists.txt: {unlisted}"
    assert folder / f"{module}.py" in [s for s in scripts]
    assert (folder / "Resources" / "UI" / f"{module}.ui").resolve() in resources
    assert (folder / "Resources" / "Icons" / f"{module}.png").resolve() in resources


NOT_SHIPPED = {"sarseg/bench.py", "sarseg/bench_ssl.py", "sarseg/bench_interactive.py"}  # benchmarks: run from a pip-installed engine


def _engine_files(variable):
    _, listed = _module_sets(ENGINE_MODULE)
    return [_resolve(ENGINE_MODULE, s) for s in listed(variable)]


def test_engine_ships_inside_the_extension():
    scripts, data = _engine_files("SAR_ENGINE_PYTHON_SCRIPTS"), _engine_files("SAR_ENGINE_DATA_FILES")
    engine = scripts + data
    missing = [str(p) for p in engine if not p.is_file()]
    assert not missing, f"{ENGINE_MODULE}/CMakeLists.txt lists engine files that do not exist: {missing}"
    assert all(ENGINE_DIR in p.parents for p in engine), "the engine files are copied into sarseg/"
    assert all(p.suffix == ".py" for p in scripts) and not any(p.suffix == ".py" for p in data)
    left_out = {str(p.relative_to(ROOT)) for p in _files(ENGINE_DIR, {".py", ".txt", ".json"}) if p not in engine}
    assert left_out == NOT_SHIPPED, (f"the extension would ship without {sorted(left_out - NOT_SHIPPED)}: add them to "
                                     f"SAR_ENGINE_PYTHON_SCRIPTS (or SAR_ENGINE_DATA_FILES) in {ENGINE_MODULE}/CMakeLists.txt"
                                     if left_out - NOT_SHIPPED else f"listed, though they do not ship: {NOT_SHIPPED - left_out}")
    assert (ENGINE_DIR / "requirements.txt").resolve() in data
    for module in MODULE_DIRS:
        if module != ENGINE_MODULE:
            assert "SAR_ENGINE_PYTHON_SCRIPTS" not in cmake_sets(ROOT / module / "CMakeLists.txt")
    # each engine script is copied into the build folder and passed to the macro with an absolute path;
    # each data file is copied straight into the scripted modules folder (installed as a whole)
    calls = cmake_calls(ROOT / ENGINE_MODULE / "CMakeLists.txt")
    loop = [args for name, args in calls if name == "foreach"]
    relative = [args for name, args in calls if name == "file" and args[:1] == ["RELATIVE_PATH"]]
    assert relative == [["RELATIVE_PATH", "_name", "${CMAKE_CURRENT_SOURCE_DIR}/../sarseg",
                         "${CMAKE_CURRENT_SOURCE_DIR}/${_script}"],
                        ["RELATIVE_PATH", "_name", "${CMAKE_CURRENT_SOURCE_DIR}/../sarseg",
                         "${CMAKE_CURRENT_SOURCE_DIR}/${_file}"],
                        ["RELATIVE_PATH", "_name", "${CMAKE_CURRENT_SOURCE_DIR}/../Resources/Models",
                         "${CMAKE_CURRENT_SOURCE_DIR}/${_model_file}"]]
    assert ["_script", "IN", "LISTS", "SAR_ENGINE_PYTHON_SCRIPTS"] in loop
    assert ["_file", "IN", "LISTS", "SAR_ENGINE_DATA_FILES"] in loop
    copies = [args for name, args in calls if name == "configure_file"]
    assert copies == [["${CMAKE_CURRENT_SOURCE_DIR}/${_script}", "${CMAKE_CURRENT_BINARY_DIR}/sarseg/${_name}", "COPYONLY"],
                      ["${CMAKE_CURRENT_SOURCE_DIR}/${_file}",
                       "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/sarseg/${_name}", "COPYONLY"],
                      ["${CMAKE_CURRENT_SOURCE_DIR}/${_model_file}",
                       "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/sarseg/builtin_models/${_name}",
                       "COPYONLY"]]
    build = [args for name, args in calls if name == "slicermacrobuildscriptedmodule"]
    assert "${_sar_engine_copies}" in build[0][build[0].index("SCRIPTS"):build[0].index("RESOURCES")]


def test_shipped_engine_imports_nothing_that_does_not_ship():
    """The files left out (the benchmarks) are only ever loaded by name, by `sarseg bench`, which says so."""
    left_out = {Path(p).stem for p in NOT_SHIPPED}
    for path in _engine_files("SAR_ENGINE_PYTHON_SCRIPTS"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            imported = {n.rsplit(".", 1)[-1] for n in names}
            assert not imported & left_out, f"{path.relative_to(ROOT)} imports {sorted(imported & left_out)}, which does not ship"


def test_dependency_ranges_have_one_source():
    """pyproject.toml's dependencies are sarseg/requirements.txt, as setuptools reads it, and the Slicer
    installer checks the same list; ranges, not pins (the Makefile pins the build it installs)."""
    import tomllib

    from packaging.requirements import Requirement
    from setuptools.config.pyprojecttoml import read_configuration

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "dependencies" in project["dynamic"] and "dependencies" not in project
    from_pyproject = read_configuration(ROOT / "pyproject.toml", expand=True)["project"]["dependencies"]
    sys.path.insert(0, str(ROOT / ENGINE_MODULE))
    try:
        from SARSegmentationLib import dependencies
    finally:
        sys.path.remove(str(ROOT / ENGINE_MODULE))
    from_installer = dependencies.engine_requirements()
    assert from_pyproject == from_installer
    names = [Requirement(r).name for r in from_installer]
    assert {"torch", "monai", "SimpleITK", "numpy"} <= set(names) and len(names) == len(set(names))
    assert not [r for r in from_installer if any(s.operator in ("==", "===") for s in Requirement(r).specifier)]
    assert "pip install -q torch==2.13.0" in (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", MODULE_DIRS)
def test_module_cmake_uses_the_slicer_macros(module):
    calls = cmake_calls(ROOT / module / "CMakeLists.txt")
    names = [name for name, _ in calls]
    build = [args for name, args in calls if name == "slicermacrobuildscriptedmodule"]
    assert len(build) == 1
    args = build[0]
    assert args[:2] == ["NAME", "${MODULE_NAME}"] and "WITH_GENERIC_TESTS" in args
    assert args.index("SCRIPTS") < args.index("RESOURCES")
    assert "${MODULE_PYTHON_SCRIPTS}" in args and "${MODULE_PYTHON_RESOURCES}" in args
    # the module's own unittest is registered, only when testing is built
    test = names.index("slicer_add_python_unittest")
    assert calls[test][1] == ["SCRIPT", "${MODULE_NAME}.py"]
    opened = max(i for i, (name, args) in enumerate(calls[:test]) if name == "if")
    assert calls[opened][1] == ["BUILD_TESTING"] and "endif" not in names[opened:test]
    assert "endif" in names[test:]


@pytest.mark.parametrize("module", MODULE_DIRS)
def test_module_icon_is_128_png(module):
    icon = ROOT / module / "Resources" / "Icons" / f"{module}.png"
    assert png_size(icon) == (128, 128)


def _parameter_names(tree):
    """Attributes of the class decorated with @parameterNodeWrapper."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", getattr(d, "attr", None)) == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return set()


@pytest.mark.parametrize("module", MODULE_DIRS)
def test_module_ui_file_matches_the_widget(module):
    ui = ROOT / module / "Resources" / "UI" / f"{module}.ui"
    root = ET.parse(ui).getroot()
    assert root.tag == "ui" and root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    layouts = {layout.get("name") for layout in root.iter("layout")}
    assert "ctkCollapsibleButton" in widgets.values() and "qMRMLNodeComboBox" in widgets.values()
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    used = {cls for cls in widgets.values() if cls.startswith(("ctk", "qMRML", "qSlicer"))}
    assert used <= custom, f"declare as custom widgets: {used - custom}"
    # every MRML selector gets the scene from the top-level qMRMLWidget
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {name for name, cls in widgets.items() if cls == "qMRMLNodeComboBox"}
    assert selectors <= connected, f"connect mrmlSceneChanged to setMRMLScene of {selectors - connected}"

    source = (ROOT / module / f"{module}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    # each widget bound to the parameter node names an existing parameter
    bound = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.findtext("string")
    parameters = _parameter_names(tree)
    assert parameters and set(bound.values()) <= parameters, set(bound.values()) - parameters
    # every self.ui.X the widget uses exists in the .ui file
    used_names = set(re.findall(r"self\.ui\.([A-Za-z_][A-Za-z0-9_]*)", source))
    unknown = used_names - set(widgets) - layouts
    assert not unknown, f"{module}.py uses widgets missing from {ui.name}: {sorted(unknown)}"


def _module_python_files():
    return [p for module in MODULE_DIRS for p in _files(ROOT / module, {".py"})]


@pytest.mark.parametrize("path", _module_python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_python_byte_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def _load_time_imports(tree):
    """(module, line) of the imports that run when the file is imported: at module level, also inside
    if/try/with blocks and class bodies, but not inside functions."""
    found = []

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                found.extend((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append(("." * node.level + (node.module or ""), node.lineno))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(tree.body)
    return found


def _root_name(module):
    return module.lstrip(".").split(".")[0]


STDLIB = set(sys.stdlib_module_names) | {"__future__"}


@pytest.mark.parametrize("module", MODULE_DIRS)
def test_module_file_imports_only_what_slicer_ships(module):
    path = ROOT / module / f"{module}.py"
    allowed = STDLIB | SLICER_PROVIDED | LIB_PACKAGES
    bad = [(name, line) for name, line in _load_time_imports(ast.parse(path.read_text(encoding="utf-8")))
           if name.startswith(".") or _root_name(name) not in allowed]
    assert not bad, f"{path.name}: import these on first use, inside functions: {bad}"


@pytest.mark.parametrize("path", [p for p in _module_python_files() if p.parent.name in LIB_PACKAGES],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_lib_files_import_only_the_standard_library_at_load_time(path):
    """The Lib packages load in any Python (no Slicer application, no Qt, no engine): slicer, vtk, the
    engine and torch are imported inside the functions that use them."""
    allowed = STDLIB | LIB_PACKAGES
    bad = [(name, line) for name, line in _load_time_imports(ast.parse(path.read_text(encoding="utf-8")))
           if not name.startswith(".") and _root_name(name) not in allowed]
    assert not bad, f"{path.relative_to(ROOT)}: import these on first use, inside functions: {bad}"


def test_lib_packages_import_without_slicer_qt_or_engine():
    """In a fresh interpreter the Lib packages load no Slicer, Qt, VTK, engine or torch module."""
    code = (f"import sys\nsys.path[:0] = {[str(ROOT / m) for m in MODULE_DIRS]!r}\n"
            "import SARSegmentationLib, SARPretrainLib\n"
            f"loaded = sorted(m for m in {sorted(DEFERRED | SLICER_PROVIDED)!r} if m in sys.modules)\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
