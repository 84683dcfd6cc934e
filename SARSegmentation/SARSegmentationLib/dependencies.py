"""The Python packages the SAR engine needs inside Slicer, checked and installed on first use.

Never at import: the modules call :func:`ensure_dependencies` when the user first applies something.
Order: the engine itself (``sarseg``, shipped inside the extension next to the module scripts; in a
source checkout the repository root is added to ``sys.path``), PyTorch through the PyTorch
extension's ``PyTorchUtils`` (it picks the build for the GPU and driver), then the engine's other
packages with ``slicer.util.pip_install``. The version ranges are the engine's own
``sarseg/requirements.txt`` (the file ``pyproject.toml`` reads too, shipped with the engine), compared
with the installed versions by ``packaging``, which Slicer's Python always has (Slicer's SuperBuild
installs it: ``SuperBuild/External_python-pythonqt-requirements.cmake``). Slicer's own SimpleITK and
numpy are pinned through a pip constraints file so they are never replaced (VTK is not a pip package
in Slicer; nothing here depends on it). The user is asked before anything is installed, and told when
Slicer must be restarted (a package that was already imported got another version).

Only the standard library is imported at module level; ``slicer``/``qt``/``packaging`` only inside the
functions that need them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .protocols import SARLogicError

SLICER_OWNED = ("SimpleITK", "numpy")  # pinned while installing (VTK is Slicer's own build, not a pip package)
MINIMUM_PYTHON = (3, 10)


def engine_requirements() -> list[str]:
    """The engine's requirements, ``sarseg/requirements.txt`` (comments and blank lines dropped)."""
    text = importlib.resources.files("sarseg").joinpath("requirements.txt").read_text(encoding="utf-8")
    return [line for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines()) if line]


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirement_met(requirement: str, version_of: Callable[[str], str | None] = installed_version) -> bool:
    """Whether the installed version (``version_of``) lies in the requirement's range; a local build
    (``2.13.0+cpu``) counts as its release, pre-releases count."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion

    wanted = Requirement(requirement)
    version = version_of(wanted.name)
    try:
        return version is not None and wanted.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False


@dataclass
class Missing:
    """What is not there yet: ``torch`` (a requirement string or None) and the pip requirements."""

    torch: str | None = None
    packages: list[str] = field(default_factory=list)
    engine: bool = False
    python: bool = False

    @property
    def nothing(self) -> bool:
        return not (self.torch or self.packages or self.engine or self.python)

    def describe(self) -> str:
        items = []
        if self.torch:
            items.append(f"PyTorch ({self.torch})")
        items.extend(self.packages)
        return ", ".join(items)


def ensure_engine_on_path(here: Path | None = None) -> bool:
    """Make ``import sarseg`` work: installed, it lies beside the module scripts (already on sys.path);
    in a source checkout it is the repository's ``sarseg`` folder. Returns whether it is importable."""
    if importlib.util.find_spec("sarseg") is not None:
        return True
    here = (here or Path(__file__)).resolve()
    for candidate in (here.parents[1], here.parents[2]):
        if (candidate / "sarseg" / "__init__.py").is_file() and (candidate / "sarseg" / "requirements.txt").is_file():
            if str(candidate) not in sys.path:
                sys.path.append(str(candidate))
            importlib.invalidate_caches()
            return importlib.util.find_spec("sarseg") is not None
    return False


def require_engine() -> None:
    """Raise :class:`SARLogicError` (shown as it is) unless ``import sarseg`` works (see
    :func:`ensure_engine_on_path`): what the module logic checks before it makes a job runner."""
    if not ensure_engine_on_path():
        raise SARLogicError("the SAR engine (the 'sarseg' Python package) was not found; reinstall the extension")


def missing(version_of: Callable[[str], str | None] = installed_version,
            python: tuple[int, ...] = tuple(sys.version_info[:2])) -> Missing:
    """What must still be installed (nothing is installed here)."""
    from packaging.requirements import Requirement

    result = Missing()
    result.python = tuple(python) < MINIMUM_PYTHON
    result.engine = not ensure_engine_on_path()
    if result.engine:
        return result
    for requirement in engine_requirements():
        wanted = Requirement(requirement)
        if wanted.name in SLICER_OWNED or requirement_met(requirement, version_of):
            continue
        if wanted.name == "torch":
            result.torch = str(wanted.specifier)
        else:
            result.packages.append(requirement)
    return result


def constraints_text(version_of: Callable[[str], str | None] = installed_version) -> str:
    """pip constraints that keep Slicer's own packages at the installed versions."""
    lines = []
    for name in SLICER_OWNED:
        version = version_of(name)
        if version:
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + ("\n" if lines else "")


def _imported(requirement: str) -> bool:
    from packaging.requirements import Requirement

    return Requirement(requirement).name.lower().replace("-", "_") in sys.modules


# -- inside Slicer --------------------------------------------------------------------------------

def ensure_dependencies(ask: bool = True) -> bool:
    """Check (and with the user's consent install) everything the engine needs, inside Slicer.

    Returns True when everything is there and usable now; False when the user declined, something
    failed (a message was shown), or Slicer must be restarted first (the user is told).
    """
    import slicer

    need = missing()
    if need.python:
        slicer.util.errorDisplay(
            f"The SAR engine needs Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer; this Slicer has "
            f"{sys.version.split()[0]}. Please use a newer Slicer release.")
        return False
    if need.engine:
        slicer.util.errorDisplay("The SAR engine (the 'sarseg' Python package) was not found next to the module "
                                 "scripts. Please reinstall the SARExtension.")
        return False
    if need.nothing:
        return True

    testing = bool(slicer.app.commandOptions().testingEnabled) if hasattr(slicer, "app") else False
    if ask and not testing:
        text = (f"SAR needs these Python packages, which are not installed yet: {need.describe()}.\n\n"
                "Download and install them now? This can take several minutes (PyTorch is large). "
                "SimpleITK, numpy and VTK of Slicer are left as they are.")
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle="SAR: install Python packages"):
            logging.info("SAR: installation of Python packages declined")
            return False

    restart = False
    with slicer.util.WaitCursor() if hasattr(slicer.util, "WaitCursor") else _nothing():
        if need.torch:
            try:
                import PyTorchUtils  # the PyTorch extension (a dependency of this extension)
            except ImportError:
                slicer.util.errorDisplay("SAR needs the PyTorch extension. Install 'PyTorch' with the Extensions "
                                         "Manager, restart Slicer, then try again.")
                return False
            restart = restart or "torch" in sys.modules  # an older torch is loaded already
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                   torchVersionRequirement=need.torch)
            if torch is None:
                slicer.util.errorDisplay("PyTorch was not installed; SAR cannot run without it.")
                return False
        if need.packages:
            fd, constraints = tempfile.mkstemp(prefix="sar-constraints-", suffix=".txt")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(constraints_text())
                for requirement in need.packages:
                    restart = restart or _imported(requirement)
                    slicer.util.pip_install([requirement, "--constraint", constraints])
            except Exception as exc:
                slicer.util.errorDisplay(f"Installing {need.describe()} failed: {exc}")
                return False
            finally:
                os.remove(constraints)
    importlib.invalidate_caches()
    if restart:
        if slicer.util.confirmOkCancelDisplay(
                "The Python packages were updated. Slicer must be restarted before SAR can use them. "
                "Restart now?", windowTitle="SAR: restart needed"):
            slicer.util.restart()
        return False
    left = missing()
    if not left.nothing:
        slicer.util.errorDisplay(f"Still missing after installing: {left.describe()}. See the Python console.")
        return False
    return True


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        return False
