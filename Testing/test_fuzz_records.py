"""Random mutations of the records a user (or anyone with access to the folder) can edit, fed to every
command that reads them: exit 0 or 2, never a traceback, never a signal sent or a job started."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any


import pytest

from sarseg.cli import main
from sarseg.core import jobs
from sarseg.core.jobs import Job, JobManager

VALUES: list[Any] = [None, True, False, 0, 1, -1, 2**63, 1.5, float("nan"), "", "x", "running", "queued", "cuda",
                     "../../etc", [], ["pretrain"], [1, 2], {}, {"a": 1}]


def mutate(value: Any, rng: random.Random) -> Any:
    """The JSON value with one random change somewhere inside it: a replaced, removed or added entry."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        out = dict(value)
        action = rng.random()
        if action < 0.2:
            del out[key]
        elif action < 0.3:
            out[rng.choice(["extra", "pid", "pgid", "state"])] = rng.choice(VALUES)
        else:
            out[key] = mutate(value[key], rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.6:
        out = list(value)
        out[rng.randrange(len(out))] = mutate(out[rng.randrange(len(out))], rng)
        return out
    return rng.choice(VALUES)


def test_fuzz_job_records_through_every_jobs_command(tmp_path: Path, monkeypatch, capsys) -> None:
    sent: list = []
    monkeypatch.setattr(jobs.os, "killpg", lambda *a: sent.append(a))
    monkeypatch.setattr(jobs.os, "kill", lambda *a: sent.append(a))
    launched: list = []

    def launch(self: JobManager, job: Job) -> Job:  # a mutated record may be queued: never run it
        launched.append(job.id)
        return self._update(job.id, state="failed", exit_code=1)

    monkeypatch.setattr(JobManager, "_launch", launch)
    root = tmp_path / "jobs"
    job_id = "20260101-000000-pretrain-0a1b"
    valid = {"id": job_id, "kind": "pretrain", "argv": ["pretrain", "--out", "x"], "device": "cpu",
             "state": "done", "created": "2026-01-01T00:00:00", "exit_code": 0, "runs": 1, "history": [],
             "env": {}, "limits": {"cpu": 1, "cuda": 1}, "pid": 12345, "pgid": 12345, "pid_start": 1}
    rng = random.Random(7)
    for trial in range(300):
        folder = root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        record = mutate(valid, rng)
        (folder / "job.json").write_text(json.dumps(record))
        (folder / "progress.jsonl").write_text(rng.choice(['{"event": "step", "step": "x"}\n', "garbage\n", "",
                                                           '{"event": "start", "steps": null}\n']))
        for command in (["list"], ["list", "--json"], ["show", job_id], ["log", job_id], ["cancel", job_id, "--timeout", "0"],
                        ["resume", job_id]):
            capsys.readouterr()
            rc = main(["jobs", "--root", str(root), *command])
            err = capsys.readouterr().err
            assert rc in (0, 2), (trial, record, command, err)
            assert "Traceback" not in err, (trial, record, command, err)
            if rc == 2:
                assert err.startswith("sarseg: error: "), err
    assert sent == []


def test_fuzz_model_cards_through_segment_and_finetune(tmp_path: Path, capsys) -> None:
    """Mutated model.json files (the weights and their SHA-256 stay) given to ``segment`` (a promptable
    one with a click) and to ``finetune --init``: exit 0 or 2 with a clean message, and no output file
    unless it succeeded."""
    import dataclasses

    from test_model import pretrained_card, saved, segmentation_card

    from sarseg import phantom
    from sarseg.core.card import PromptSpec
    from sarseg.io import write_image

    images, label = phantom.make_case(3, (16, 32, 32))
    image = write_image(tmp_path / "mr.nii.gz", images["mr"], phantom.geometry((16, 32, 32)))
    labels = write_image(tmp_path / "label.nii.gz", (label > 0).astype("int16"), phantom.geometry((16, 32, 32)))
    fixed = segmentation_card()
    promptable = dataclasses.replace(fixed, architecture=dataclasses.replace(fixed.architecture, in_channels=4),
                                     prompts=PromptSpec())
    models = {"segmentation": saved(tmp_path / "seg", fixed)[0], "pretrained": saved(tmp_path / "pre", pretrained_card())[0],
              "promptable": saved(tmp_path / "click", promptable)[0]}
    originals = {kind: json.loads((folder / "model.json").read_text()) for kind, folder in models.items()}
    rng = random.Random(11)
    succeeded = set()
    for trial in range(90):
        kind = rng.choice(sorted(models))
        folder = models[kind]
        (folder / "model.json").write_text(json.dumps(mutate(originals[kind], rng)))
        out = tmp_path / f"out{trial}"
        if kind != "pretrained":
            argv = ["segment", "--model", folder, "--input", image, "--output", out.with_suffix(".nii.gz"), "--device", "cpu",
                    *(["--points", "-50,50,-50"] if kind == "promptable" else [])]
            made = out.with_suffix(".nii.gz")
        else:
            argv = ["finetune", "--init", folder, "--images", image, "--labels", labels, "--preset", "tiny",
                    "--steps", "1", "--out", out, "--device", "cpu", "--progress", "json"]
            made = out
        capsys.readouterr()
        rc = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert rc in (0, 2) and "Traceback" not in err, (trial, kind, err)
        if rc == 2:
            assert "sarseg: error: " in err and not made.exists(), (trial, kind, err)
        else:
            assert made.exists(), (trial, kind)
            succeeded.add(kind)
    assert succeeded == set(models)  # each kind ran through at least once, so the fuzz reaches past the card


@pytest.mark.parametrize("timeout", ["nan", "-1", "inf"])
def test_cancel_timeout_must_be_a_finite_number_of_seconds(tmp_path: Path, timeout: str, capsys) -> None:
    rc = main(["jobs", "--root", str(tmp_path), "cancel", "20260101-000000-pretrain-0a1b", "--timeout", timeout])
    assert rc == 2 and "--timeout" in capsys.readouterr().err
