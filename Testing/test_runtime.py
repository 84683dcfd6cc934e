"""The thread policy (``sarseg.runtime.configure_threads``): a short OpenMP spin, one thread per core other
programs leave idle, and the user's own settings first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sarseg import runtime

OMP = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch):
    for name in OMP:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def spinning():
    """One busy process per core this process may use, as another program holding the cores."""
    procs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in runtime.available_cores()]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("busy, expected", [(0.0, None), (0.4, None), (0.6, "1"), (1.0, "1"), (2.0, "1")])
def test_threads_follow_the_idle_cores(busy: float, expected: str | None, clean_env) -> None:
    clean_env.setattr(runtime, "available_cores", lambda: {0, 1})
    clean_env.setattr(runtime.os, "cpu_count", lambda: 2)
    clean_env.setattr(runtime, "busy_cores", lambda cores, seconds=0.2: busy)
    runtime.configure_threads(None)
    assert os.environ.get("OMP_NUM_THREADS") == expected  # None: torch's own count, the idle machine's
    assert os.environ["GOMP_SPINCOUNT"] == str(runtime.SPIN_COUNT)


def test_a_restricted_affinity_caps_the_threads(clean_env) -> None:
    clean_env.setattr(runtime, "available_cores", lambda: {0, 1, 2, 3})
    clean_env.setattr(runtime.os, "cpu_count", lambda: 64)
    clean_env.setattr(runtime, "busy_cores", lambda cores, seconds=0.2: 0.0)
    runtime.configure_threads(None)
    assert os.environ["OMP_NUM_THREADS"] == "4"


def test_the_users_settings_win(clean_env) -> None:
    clean_env.setenv("OMP_WAIT_POLICY", "PASSIVE")
    clean_env.setenv("OMP_NUM_THREADS", "3")
    clean_env.setattr(runtime, "busy_cores", lambda cores, seconds=0.2: pytest.fail("sampled the load"))
    runtime.configure_threads(None)
    assert "GOMP_SPINCOUNT" not in os.environ and os.environ["OMP_NUM_THREADS"] == "3"
    runtime.configure_threads(None, adapt=False)
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_busy_cores_sees_another_program(spinning) -> None:
    cores = runtime.available_cores()
    assert runtime.busy_cores(cores) > len(cores) - 0.5


def test_a_fresh_process_beside_busy_cores_uses_one_thread(spinning, clean_env) -> None:
    """End to end: the policy is set before torch loads, and torch and libgomp take it."""
    code = ("from sarseg.runtime import configure_threads; configure_threads(None); import os, torch; "
            "print(torch.get_num_threads(), os.environ['GOMP_SPINCOUNT'])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", str(runtime.SPIN_COUNT)]
