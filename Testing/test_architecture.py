"""The import rules of docs/ARCHITECTURE.md, checked on the source: the torch-free layer imports only the
standard library, each engine module imports only lower layers, Slicer appears only in the MRML adapter,
and what Slicer's GUI process imports never pulls in torch."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "sarseg"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
TORCH = {"torch", "monai", "safetensors"}
SLICER = {"slicer", "vtk", "qt", "ctk", "MRMLCorePython", "MRMLLogicPython", "PyTorchUtils"}

# docs/ARCHITECTURE.md, "Who may import whom": a module imports only modules of lower layers
LAYERS = {
    0: {"core"},                                   # formats, records, folders: standard library only
    1: {"io", "runtime", "figures"},               # files and pictures: numpy, SimpleITK, scipy
    2: {"config", "phantom", "mrml"},
    3: {"nets", "proxy", "metrics", "clicks"},
    4: {"model", "data"},
    5: {"infer", "train"},
    6: {"pretrain", "finetune", "prompted"},
    7: {"demo", "bench", "bench_ssl", "jobs_cli", "models_cli", "interactive", "serve", "bench_interactive"},
    8: {"cli"},
    9: {"__main__"},
}
LAYER = {name: layer for layer, names in LAYERS.items() for name in names}
TORCH_FREE = {"core", "io", "runtime", "figures", "phantom", "mrml"}


def module_name(path: Path) -> str:
    """``core`` for anything in sarseg/core, else the file's stem (``__init__`` for the package)."""
    relative = path.relative_to(ENGINE)
    return "core" if relative.parts[0] == "core" else relative.stem


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module, inside a function) for every import in the file."""
    package = ["sarseg", *path.relative_to(ENGINE).parent.parts] if path.is_relative_to(ENGINE) else []
    found = []

    def visit(nodes, lazy: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((alias.name, lazy) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                if node.level and not node.module:  # from . import x
                    found.extend((f"{module}.{alias.name}", lazy) for alias in node.names)
                else:
                    found.append((module, lazy))
            inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(node, field, None) or [], inner)

    visit(ast.parse(path.read_text(encoding="utf-8")).body, False)
    return found


def engine_target(module: str) -> str | None:
    """The engine module an import names (``core`` for sarseg.core.*), or None outside the engine."""
    parts = module.split(".")
    if parts[0] != "sarseg":
        return None
    if len(parts) == 1 or parts[1] == "__version__":
        return "__init__"
    return "core" if parts[1] == "core" else parts[1]


ENGINE_FILES = sorted(ENGINE.rglob("*.py"))


def test_every_engine_module_has_a_layer() -> None:
    names = {module_name(p) for p in ENGINE_FILES} - {"__init__"}
    assert names == set(LAYER), f"give these a layer in LAYERS and docs/ARCHITECTURE.md: {names ^ set(LAYER)}"


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_modules_import_only_lower_layers(path: Path) -> None:
    name = module_name(path)
    if name == "__init__":
        return
    bad = [module for module, lazy in imports(path)
           if (target := engine_target(module)) not in (None, "__init__")
           and not (LAYER[target] < LAYER[name] or target == name == "core")]
    assert not bad, f"{path.relative_to(ROOT)} (layer {LAYER[name]}) imports a layer at or above its own: {bad}"


@pytest.mark.parametrize("path", sorted((ENGINE / "core").rglob("*.py")), ids=lambda p: p.name)
def test_the_core_layer_imports_only_the_standard_library(path: Path) -> None:
    """numpy (label maps from probabilities) and psutil (processes where there is no /proc) only inside a
    function, never at import time."""
    bad = [(module, lazy) for module, lazy in imports(path)
           if module.split(".")[0] not in STDLIB and engine_target(module) != "core"
           and not (lazy and module.split(".")[0] in ("numpy", "psutil"))]
    assert not bad, f"sarseg/core/{path.name} imports {bad}"


def test_slicer_only_in_the_mrml_adapter() -> None:
    users = sorted(str(p.relative_to(ROOT)) for p in ENGINE_FILES
                   if any(m.split(".")[0] in SLICER for m, _ in imports(p)))
    assert users == ["sarseg/mrml.py"]


def closure(names: set[str]) -> set[str]:
    """The external top-level packages the engine modules ``names`` load at import time, transitively."""
    seen, todo, external = set(), list(names), set()
    files = {module_name(p): [q for q in ENGINE_FILES if module_name(q) == module_name(p)] for p in ENGINE_FILES}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for path in files.get(name, []):
            for module, lazy in imports(path):
                if lazy:
                    continue
                target = engine_target(module)
                if target is None:
                    external.add(module.split(".")[0])
                elif target != "__init__":
                    todo.append(target)
    return external


def test_torch_free_modules_load_no_torch() -> None:
    for name in TORCH_FREE:
        assert not closure({name}) & TORCH, f"sarseg.{name} loads {closure({name}) & TORCH} at import time"


SLICER_FILES = sorted(p for m in ("SARSegmentation", "SARPretrain") for p in (ROOT / m).rglob("*.py"))


@pytest.mark.parametrize("path", SLICER_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_slicer_modules_never_import_torch_or_the_heavy_engine(path: Path) -> None:
    """Slicer's GUI process imports the engine's torch-free modules only: torch runs in the jobs."""
    engine = {engine_target(m) for m, _ in imports(path)} - {None, "__init__"}
    external = {m.split(".")[0] for m, _ in imports(path) if engine_target(m) is None}
    assert engine <= TORCH_FREE, f"{path.name} imports sarseg.{sorted(engine - TORCH_FREE)}"
    assert not external & TORCH and not closure(engine) & TORCH, f"{path.name} would load torch in Slicer"


def test_the_segmentation_lib_never_imports_the_pretrain_lib() -> None:
    """SARPretrainLib builds on SARSegmentationLib; the way back (the interactive section adding a case to a
    training set) goes through a protocol (``TrainingSet``) that the module injects, so neither Lib package
    imports a half-initialised other."""
    users = [p.name for p in sorted((ROOT / "SARSegmentation" / "SARSegmentationLib").glob("*.py"))
             if any(module.split(".")[0] == "SARPretrainLib" for module, _ in imports(p))]
    assert not users, f"SARSegmentationLib files import SARPretrainLib: {users}"
