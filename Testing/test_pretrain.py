"""``sarseg pretrain`` end to end: learning on real scans, model folder, resume after SIGTERM, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sarseg.cli import main
from sarseg.model import load_model
from sarseg.nets import SARNet
from sarseg.config import from_dict

REPO = Path(__file__).resolve().parents[1]


def log_rows(folder: Path) -> list[dict]:
    with open(folder / "log.csv") as handle:
        return list(csv.DictReader(handle))


def sar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sarseg", *args]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, real_sources) -> Path:
    """One tiny pretraining run on the real MR, CT and PET cases, shared by the checks below."""
    out = tmp_path_factory.mktemp("real") / "model"
    config = tmp_path_factory.mktemp("cfg") / "config.json"
    config.write_text(json.dumps({"batch_size": 8, "lambda_scale": 1.0, "eval_cubes": 384}))
    rc = main(["pretrain", "--data", *real_sources, "--out", str(out), "--preset", "tiny", "--steps", "200",
               "--config", str(config), "--progress", "json", "--seed", "0"])
    assert rc == 0
    return out


def test_restoration_loss_falls_on_real_scans(real_run: Path) -> None:
    losses = [float(r["loss_restore"]) for r in log_rows(real_run)]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first


def test_scale_accuracy_beats_chance_on_fresh_cubes(real_run: Path) -> None:
    evaluation = json.loads((real_run / "model.json").read_text())["provenance"]["proxy_evaluation"]
    n, chance = evaluation["cubes"], evaluation["scale_chance"]
    margin = 2.3 * math.sqrt(chance * (1 - chance) / n)  # one-sided p < 0.01 under guessing
    assert evaluation["scale_acc"] > chance + margin
    assert 0.0 <= evaluation["disc_acc"] <= 1.0  # reported; the encoder is trained to keep it low


def test_model_folder_describes_itself_and_loads_without_pickle(real_run: Path) -> None:
    card, state = load_model(real_run)
    meta = card.to_dict()
    assert meta["kind"] == "pretrained" and meta["preset"] == "tiny"
    assert meta["sources"] == ["mr", "ct", "pet"]
    assert meta["provenance"]["steps"] == 200
    assert len(meta["provenance"]["data"]["pet"]) == 2
    assert len(meta["weights"]["sha256"]) == 64
    config = from_dict(meta["provenance"]["config"])
    net = SARNet(1, config.net, len(config.proxy.scales), len(meta["sources"]))
    net.load_state_dict(state)
    out = net(torch.rand(1, 1, *config.proxy.size_zyx))
    assert out["restored"].shape == (1, 1, *config.proxy.size_zyx)


def test_tampered_weights_are_refused(real_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    copy.mkdir()
    for name in ("model.json", "weights.safetensors"):
        (copy / name).write_bytes((real_run / name).read_bytes())
    data = bytearray((copy / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "weights.safetensors").write_bytes(bytes(data))
    from sarseg.core.errors import BadInput

    with pytest.raises(BadInput, match="SHA-256"):
        load_model(copy)


def test_sigterm_checkpoints_exits_130_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "model"
    cmd = sar_cmd("pretrain", "--out", str(out), "--preset", "tiny", "--steps", "100000", "--progress", "json")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    for line in proc.stdout:  # wait until training runs
        if '"event": "step"' in line and json.loads(line)["step"] >= 10:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    stopped = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert stopped >= 10
    card, _ = load_model(out)  # the model at the checkpoint is whole
    assert card.provenance["steps"] == stopped
    resumed = subprocess.run(sar_cmd("pretrain", "--out", str(out), "--preset", "tiny", "--resume",
                                     "--steps", str(stopped + 10), "--progress", "json"),
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["step"] == stopped
    assert load_model(out)[0].provenance["steps"] == stopped + 10
    steps = [int(r["step"]) for r in log_rows(out)]
    assert steps == sorted(steps) and steps[-1] == stopped + 10


def test_ddp_with_two_cpu_processes(tmp_path: Path) -> None:
    out = tmp_path / "model"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "sarseg", "pretrain", "--out", str(out), "--preset", "tiny", "--steps", "6", "--device", "cpu",
           "--progress", "json"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    start = next(e for e in events if e["event"] == "start")
    assert start["world"] == 2  # one process reports; both trained
    card, _ = load_model(out)
    assert card.provenance["steps"] == 6
