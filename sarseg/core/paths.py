"""The engine's default folders, defined once for the terminal, the jobs and the Slicer modules.

* home: ``$SARSEG_HOME``, else the platform's per-user data folder + ``sarseg``
  (``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux, ``~/Library/Application Support`` on macOS,
  ``%LOCALAPPDATA%`` on Windows);
* models: ``$SARSEG_MODELS``, else ``home/models``; jobs: ``$SARSEG_JOBS``, else ``home/jobs``;
* cache: ``$SARSEG_CACHE``, else the per-user cache folder + ``sarseg`` (``$XDG_CACHE_HOME`` or
  ``~/.cache``, ``~/Library/Caches``, ``%LOCALAPPDATA%\\sarseg\\Cache``).

None of them lies under Slicer's (roaming) settings folder, so ``sarseg jobs list`` in a terminal and the
modules in Slicer see the same jobs and models; Slicer hands its folders to the jobs it starts through
:func:`environment`. Standard library only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "sarseg"
HOME, MODELS, JOBS, CACHE = "SARSEG_HOME", "SARSEG_MODELS", "SARSEG_JOBS", "SARSEG_CACHE"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser().absolute() if value else None


def _xdg(name: str, fallback: str) -> Path:
    """An XDG base folder; the specification says to ignore a relative value."""
    value = os.environ.get(name)
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def _local_appdata() -> Path:
    value = os.environ.get("LOCALAPPDATA")
    return Path(value) if value else Path.home() / "AppData" / "Local"


def data_base(system: str = sys.platform) -> Path:
    """The platform's per-user data folder (not roaming: models and jobs are large and machine-bound)."""
    if system == "win32":
        return _local_appdata()
    if system == "darwin":
        return Path.home() / "Library" / "Application Support"
    return _xdg("XDG_DATA_HOME", ".local/share")


def cache_base(system: str = sys.platform) -> Path:
    """The platform's per-user cache folder (``sarseg`` is appended by :func:`cache`)."""
    if system == "win32":
        return _local_appdata()
    if system == "darwin":
        return Path.home() / "Library" / "Caches"
    return _xdg("XDG_CACHE_HOME", ".cache")


def home(system: str = sys.platform) -> Path:
    """Everything the engine keeps: ``$SARSEG_HOME``, else ``<per-user data folder>/sarseg``."""
    return _env_path(HOME) or (data_base(system) / APP).absolute()


def models(system: str = sys.platform) -> Path:
    """The user's model folders: ``$SARSEG_MODELS``, else ``home()/models``."""
    return _env_path(MODELS) or home(system) / "models"


def jobs(system: str = sys.platform) -> Path:
    """The background jobs' folders: ``$SARSEG_JOBS``, else ``home()/jobs``."""
    return _env_path(JOBS) or home(system) / "jobs"


def cache(system: str = sys.platform) -> Path:
    """Files that can be made again (synthetic phantoms): ``$SARSEG_CACHE``, else the per-user cache."""
    if env := _env_path(CACHE):
        return env
    base = cache_base(system) / APP
    return (base / "Cache" if system == "win32" else base).absolute()


def environment(jobs_root: str | os.PathLike | None = None) -> dict[str, str]:
    """The variables that make a child process use this process's folders (``jobs_root`` when the
    caller runs its jobs elsewhere), so a job started from Slicer and a terminal agree."""
    return {HOME: str(home()), MODELS: str(models()), JOBS: str(Path(jobs_root).absolute() if jobs_root else jobs()),
            CACHE: str(cache())}


def limit(name: str, default: int) -> int:
    """A size limit: the environment variable ``name`` when set (a positive whole number), else ``default``.
    Read when the limit is checked, so a bad value is reported like any bad input."""
    value = os.environ.get(name)
    if value is None:
        return default
    if not value.strip().isdigit() or int(value) < 1:
        from .errors import BadInput

        raise BadInput(name, f"must be a positive whole number (got {value!r})")
    return int(value)
