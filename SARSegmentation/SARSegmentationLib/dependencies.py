"""The Python packages the SAR engine needs inside Slicer, checked and installed on first use.

Never at import: the modules call :func:`ensure_dependencies` when the user first applies something.
Order: the engine itself (``sarseg``, shipped inside the extension next to the module scripts; in a
source checkout the repository root is added to ``sys.path``), PyTorch through the PyTorch
extension's ``PyTorchUtils`` (it picks the build for the GPU and driver), then the engine's other
packages with ``slicer.util.pip_install``. The version ranges are the engine's own
``sarseg/requirements.txt`` (the file ``pyproject.toml`` reads too, shipped with the engine), compared
with the installed versions by ``packaging``, which Slicer's Python always has (Slicer's SuperBuild
installs it: ``SuperBuild/External_python-pythonqt-requirements.cmake``); a requirement whose marker
does not hold here (``psutil`` on Linux) is skipped. Slicer's own SimpleITK and numpy are pinned at
their installed versions in every pip command so they are never replaced (VTK is not a pip package in
Slicer; nothing here depends on it). The user is asked before anything is installed, with each package
and its download size; a progress window says which step runs; a failure says what failed, the exact
command to run by hand in the Python console, where pip's output is, and where to read more; the user is
told when Slicer must be restarted (a package that was already imported got another version). The
texts are built by plain functions (:func:`install_steps`, :func:`confirmation_text`,
:func:`status_text`, :func:`failure_text`), tested without Qt.

Only the standard library is imported at module level; ``slicer``/``qt``/``packaging`` only inside the
functions that need them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import about
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
            python: tuple[int, ...] = tuple(sys.version_info[:2]), system: str = sys.platform) -> Missing:
    """What must still be installed on ``system`` (a ``sys.platform``; nothing is installed here)."""
    from packaging.requirements import Requirement

    result = Missing()
    result.python = tuple(python) < MINIMUM_PYTHON
    result.engine = not ensure_engine_on_path()
    if result.engine:
        return result
    for requirement in engine_requirements():
        wanted = Requirement(requirement)
        if wanted.marker is not None and not wanted.marker.evaluate({"sys_platform": system}):
            continue  # not for this system
        if wanted.name in SLICER_OWNED or requirement_met(requirement, version_of):
            continue
        wanted.marker = None  # it holds here; pip need not see it
        if wanted.name == "torch":
            result.torch = str(wanted.specifier)
        else:
            result.packages.append(str(wanted))
    return result


def pins(version_of: Callable[[str], str | None] = installed_version) -> list[str]:
    """``name==version`` for Slicer's own packages as installed: given to pip with every package, they keep
    Slicer's SimpleITK and numpy as they are."""
    return [f"{name}=={version}" for name in SLICER_OWNED if (version := version_of(name))]


# -- what the user is told (plain text, so it is tested without Qt) -----------------------------------

# Rough download sizes, so nobody wonders whether a long wait is a hang.
SIZES = {"torch": "about 0.2 GB for the CPU build, up to 2.5 GB with CUDA", "monai": "about 2 MB",
         "scipy": "about 40 MB", "matplotlib": "about 10 MB", "safetensors": "under 1 MB", "psutil": "under 1 MB"}
HELP = f"{about.HOMEPAGE}#install"


@dataclass
class Step:
    """One installation step: what it installs (``title``), about how much it downloads, and ``command``:
    the exact call that does it, to paste into Slicer's Python console when it fails here.
    ``pip``: the arguments of ``slicer.util.pip_install`` (None for PyTorch, installed by PyTorchUtils)."""

    title: str
    size: str
    command: str
    pip: list[str] | None = None
    torch: str | None = None


def install_steps(need: Missing, version_of: Callable[[str], str | None] = installed_version) -> list[Step]:
    """What :func:`ensure_dependencies` runs, in order: PyTorch (through the PyTorch extension), then one
    ``pip install`` per package with Slicer's own packages pinned."""
    from packaging.requirements import Requirement

    steps = []
    if need.torch:
        steps.append(Step(f"PyTorch, torch{need.torch}", SIZES["torch"],
                          "import PyTorchUtils; PyTorchUtils.PyTorchUtilsLogic().installTorch("
                          f"torchVersionRequirement={need.torch!r})", torch=need.torch))
    for requirement in need.packages:
        args = [requirement, *pins(version_of)]
        steps.append(Step(requirement, SIZES.get(Requirement(requirement).name.lower(), "a few MB"),
                          f"slicer.util.pip_install({args!r})", pip=args))
    return steps


def confirmation_text(steps: list[Step]) -> str:
    """The question asked before anything is downloaded: each package with its size."""
    lines = "\n".join(f"  - {step.title}: {step.size}" for step in steps)
    return (f"SAR needs these Python packages, which are not installed yet:\n{lines}\n\n"
            "Download and install them now? This can take several minutes; a progress window shows each step. "
            "Slicer's own SimpleITK, numpy and VTK are left as they are.")


def status_text(step: Step, index: int, count: int) -> str:
    """The progress window's line while ``step`` (number ``index`` from 0, of ``count``) runs."""
    return (f"Installing {step.title} ({step.size}), step {index + 1} of {count}.\n"
            "Pip's output goes to the Python console (View > Python Console).")


def failure_text(step: Step, error: object, log_file: str | None) -> tuple[str, str]:
    """(message, details) when ``step`` failed: what failed, the exact command to run by hand in Slicer's
    Python console, where pip's output is, and where to read more."""
    log = f" and in Slicer's log file:\n{log_file}" if log_file else ""
    text = (f"Installing {step.title} failed.\n\n"
            "To install it by hand, open View > Python Console and run:\n\n"
            f"{step.command}\n\n"
            f"then restart Slicer. Pip's messages are in the Python console{log}.\nHelp: {HELP}")
    return text, f"{type(error).__name__}: {error}"


def _imported(requirement: str) -> bool:
    from packaging.requirements import Requirement

    return Requirement(requirement).name.lower().replace("-", "_") in sys.modules


# -- inside Slicer --------------------------------------------------------------------------------

def ensure_dependencies(ask: bool = True) -> bool:
    """Check (and with the user's consent install) everything the engine needs, inside Slicer.

    Returns True when everything is there and usable now; False when the user declined, something
    failed (a message was shown, with the command to run by hand), or Slicer must be restarted first
    (the user is told). A progress window says which package is being installed and how large it is.
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

    steps = install_steps(need)
    testing = bool(slicer.app.commandOptions().testingEnabled)
    if ask and not testing:
        if not slicer.util.confirmOkCancelDisplay(confirmation_text(steps), windowTitle="SAR: install Python packages"):
            logging.info("SAR: installation of Python packages declined")
            return False
    if need.torch:
        try:
            import PyTorchUtils  # the PyTorch extension (a dependency of this extension)
        except ImportError:
            slicer.util.errorDisplay("SAR needs the PyTorch extension. Install 'PyTorch' with the Extensions "
                                     "Manager, restart Slicer, then try again.")
            return False

    restart = False
    dialog = slicer.util.createProgressDialog(maximum=len(steps), windowTitle="SAR: installing Python packages",
                                              autoClose=False)
    try:
        for index, step in enumerate(steps):
            if dialog.wasCanceled:
                return False
            dialog.labelText = status_text(step, index, len(steps))
            dialog.value = index
            slicer.app.processEvents()
            logging.info(f"SAR: installing {step.title}: {step.command}")
            try:
                if step.torch is not None:
                    restart = restart or "torch" in sys.modules  # an older torch is loaded already
                    if PyTorchUtils.PyTorchUtilsLogic().installTorch(torchVersionRequirement=step.torch) is None:
                        raise RuntimeError("PyTorchUtils installed no PyTorch")
                else:
                    restart = restart or _imported(step.pip[0])
                    slicer.util.pip_install(step.pip)
            except Exception as exc:
                text, details = failure_text(step, exc, slicer.app.currentLogFile())
                dialog.close()
                slicer.util.errorDisplay(text, windowTitle="SAR: installation failed", detailedText=details)
                return False
        dialog.value = len(steps)
    finally:
        dialog.close()
    importlib.invalidate_caches()
    if restart:
        if slicer.util.confirmOkCancelDisplay(
                "The Python packages were updated. Slicer must be restarted before SAR can use them. "
                "Restart now?", windowTitle="SAR: restart needed"):
            slicer.util.restart()
        return False
    left = missing()
    if not left.nothing:
        slicer.util.errorDisplay(f"Still missing after installing: {left.describe()}. See the Python console, "
                                 f"and {HELP}")
        return False
    return True
