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

CATALOG_SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    "slicer-extension-catalog-entry-schema-v1.0.1.json"
)
# Properties allowed by the v1.0.1 catalog entry schema
# (it sets "additionalProperties": false).
CATALOG_PROPERTIES = {
    "$schema",
    "category",
    "scm_url",
    "scm_revision",
    "scm_type",
    "build_dependencies",
    "build_subdirectory",
    "enabled",
    "tier",
}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}

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
    assert ("find_package", ["Slicer", "REQUIRED"]) in calls
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


def test_catalog_json_follows_schema(catalog):
    assert catalog["$schema"].rstrip("#") == CATALOG_SCHEMA_URL
    assert CATALOG_REQUIRED <= set(catalog)
    assert set(catalog) <= CATALOG_PROPERTIES, set(catalog) - CATALOG_PROPERTIES
    assert catalog.get("scm_type", "git") in ("git", "local")
    assert catalog.get("tier", 5) in (1, 3, 5)
    assert isinstance(catalog.get("enabled", True), bool)
    assert all(isinstance(d, str) for d in catalog.get("build_dependencies", []))


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
