"""``sarseg serve`` and its client (``sarseg.core.worker.WorkerClient``): the protocol in-process (every
kind of request, malformed ones answered and survived), then the real worker process driven by the
client: start, requests, the answer equal to ``sarseg segment``'s, a crashed worker restarted with its
volume, shutdown, and workers that fail to start or stay silent."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sarseg import phantom
from sarseg.cli import EXIT_OK, main
from sarseg.core.card import PromptSpec
from sarseg.core.prompts import Prompts
from sarseg.core.worker import WorkerClient, WorkerError, decode_mask, serve_command
from sarseg.io import write_image
from sarseg.serve import serve
from sarseg.train import resolve_device
from test_model import saved, segmentation_card

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (48, 64, 64)  # z, y, x


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A promptable tiny model (random weights: the protocol does not depend on what it learned)."""
    fixed = segmentation_card()
    card = dataclasses.replace(fixed, architecture=dataclasses.replace(fixed.architecture, in_channels=4), prompts=PromptSpec())
    return saved(tmp_path_factory.mktemp("click") / "model", card)[0]


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    images, _ = phantom.make_case(5, SHAPE)
    return write_image(tmp_path_factory.mktemp("case") / "mr.nii.gz", images["mr"], phantom.geometry(SHAPE))


def point_at(volume: Path, index_xyz) -> list[float]:
    return list(sitk.ReadImage(str(volume)).TransformIndexToPhysicalPoint(index_xyz))


def exchange(model: Path, *lines: bytes) -> list[dict]:
    out = io.BytesIO()
    assert serve(model, resolve_device("cpu"), io.BytesIO(b"".join(lines)), out) == EXIT_OK
    return [json.loads(line) for line in out.getvalue().splitlines()]


def line(data: dict) -> bytes:
    return (json.dumps(data) + "\n").encode()


def test_the_protocol_in_process(model: Path, volume: Path) -> None:
    click = point_at(volume, (30, 20, 10))
    replies = exchange(
        model,
        line({"id": 1, "op": "segment", "points": [click]}),  # no volume yet
        b"this is not json\n",
        b"\n",  # blank lines are skipped
        line({"id": 2, "op": "dance"}),
        line({"id": 3, "op": "load", "images": [str(volume.parent / "missing.nii.gz")]}),
        line({"id": 4, "op": "load", "images": [str(volume)]}),
        line({"id": "five", "op": "segment", "points": [click], "negative": [point_at(volume, (33, 20, 10))]}),
        line({"id": 6, "op": "segment", "points": [[500.0, 0.0, 0.0]]}),
        line({"id": 7, "op": "segment", "box": [*click, *click]}),
        line({"id": 8, "op": "shutdown"}),
        line({"id": 9, "op": "load", "images": [str(volume)]}),  # after shutdown: never read
    )
    ready, *answers = replies
    assert ready["op"] == "ready" and ready["ok"] and ready["protocol"] == 1 and ready["prompts"] == ["positive", "negative", "box"]
    assert ready["modalities"] == ["mr"] and ready["labels"][0]["name"] == "tumor"
    assert [a["id"] for a in answers] == [1, None, 2, 3, 4, "five", 6, 7, 8]
    assert [a["ok"] for a in answers] == [False, False, False, False, True, True, False, True, True]
    assert "no volume loaded yet" in answers[0]["error"] and "not a JSON line" in answers[1]["error"]
    assert "op is 'dance'" in answers[2]["error"] and "missing.nii.gz: no such file" in answers[3]["error"]
    assert answers[4]["size"] == [64, 64, 48] and answers[4]["spacing"] == list(phantom.SPACING_XYZ)
    segment = answers[5]
    assert segment["start"] == [14, 4, 2] and segment["size"] == [32, 32, 16]  # a tiny patch (x, y, z) around the positive click
    mask = decode_mask(segment["mask"], segment["size"])
    assert mask.shape == (16, 32, 32) and int(mask.sum()) == segment["voxels"] and segment["seconds"] > 0
    assert "(500, 0, 0) (LPS mm) lies outside the image" in answers[6]["error"]
    assert answers[7]["size"] == [32, 32, 16]  # a one-voxel box: one patch too


def test_a_fixed_model_does_not_serve(tmp_path: Path, capsys) -> None:
    fixed = saved(tmp_path / "fixed", segmentation_card())[0]
    rc = main(["serve", "--model", str(fixed), "--device", "cpu"])
    assert rc == 2 and "is not a promptable model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def client(model: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with WorkerClient(serve_command(sys.executable, str(model), "cpu", threads=1), env=env, timeout=120) as worker:
        yield worker


def test_the_worker_answers_as_segment_does(client: WorkerClient, model: Path, volume: Path, tmp_path: Path) -> None:
    assert client.ready["ok"] and client.ready["op"] == "ready"
    loaded = client.load([str(volume)])
    assert loaded["ok"] and loaded["size"] == [64, 64, 48]
    click = point_at(volume, (40, 30, 20))
    reply = client.segment(Prompts(positive=(tuple(click),)))
    assert reply["ok"], reply
    output = tmp_path / "seg.nii.gz"
    assert main(["segment", "--model", str(model), "--input", str(volume), "--output", str(output), "--device", "cpu",
                 "--points", ",".join(map(str, click))]) == EXIT_OK
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(output))) > 0
    x, y, z = reply["start"]
    sx, sy, sz = reply["size"]
    np.testing.assert_array_equal(decode_mask(reply["mask"], reply["size"]), label[z:z + sz, y:y + sy, x:x + sx])
    assert label.sum() == reply["voxels"]  # nothing outside the crop
    bad = client.request({"op": "segment", "points": [[1, 2]]})
    assert not bad["ok"] and "points[0]" in bad["error"] and client.segment(Prompts(positive=(tuple(click),)))["ok"]


def test_a_crashed_worker_is_restarted_with_its_volume(client: WorkerClient, volume: Path) -> None:
    click = (tuple(point_at(volume, (30, 30, 20))),)
    first = client.segment(Prompts(positive=click))
    client.process.kill()
    client.process.wait()
    again = client.segment(Prompts(positive=click))  # a new worker, the volume loaded into it again
    assert again["ok"] and client.restarts == 1 and client.alive()
    assert again["mask"] == first["mask"] and again["start"] == first["start"]


def test_shutdown_ends_the_worker(model: Path) -> None:
    worker = WorkerClient(serve_command(sys.executable, str(model), "cpu", threads=1),
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    worker.start()
    process = worker.process
    worker.stop()
    assert process.returncode == 0 and not worker.alive()


def test_workers_that_fail_to_start_or_stay_silent(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with pytest.raises(WorkerError, match="exited before it was ready(.|\n)*sarseg: error: .*missing"):
        WorkerClient(serve_command(sys.executable, str(tmp_path / "missing")), env=env).start()
    silent = WorkerClient([sys.executable, "-c", "import time; time.sleep(60)"], start_timeout=1.0)
    with pytest.raises(WorkerError, match="did not answer start within 1 s"):
        silent.start()
    assert not silent.alive()
