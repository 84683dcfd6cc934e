"""sarseg.core.files: atomic writes appear whole or not at all; what a killed writer left is cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sarseg.core.files import TEMP_MARK, atomic_path, remove_stale_temporaries


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        Path(tmp).write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_writer_killed_mid_write_leaves_a_temporary_that_the_next_start_removes(tmp_path: Path) -> None:
    code = ("import sys, time\nfrom pathlib import Path\nfrom sarseg.core.files import atomic_path\n"
            "with atomic_path(Path(sys.argv[1]) / 'checkpoint.pt') as tmp:\n"
            "    Path(tmp).write_bytes(b'x' * 1000)\n    print('writing', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and TEMP_MARK in left[0].name and not (tmp_path / "checkpoint.pt").exists()
    (tmp_path / ".hidden-user-file").write_text("mine")
    assert remove_stale_temporaries(tmp_path) == left
    assert [p.name for p in tmp_path.iterdir()] == [".hidden-user-file"]
