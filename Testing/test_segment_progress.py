"""``sarseg segment --progress json`` reports progress that moves: a step per batch of sliding windows
(every TTA pass counted), reading and writing as stages, an ETA; and what the module shows of it
(``SARSegmentationLib.jobs.status_of`` and ``widgethelpers.JobView``), read from the lines as a job's
progress file holds them. The model is an untrained tiny one (its output does not matter here)."""

from __future__ import annotations

import io
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import pytest
import SimpleITK as sitk
import torch

from sarseg import phantom
from sarseg.cli import EXIT_OK, main
from sarseg.core.card import InferenceConfig
from sarseg.core.labels import SCHEMES
from sarseg.core.progress import ProgressReader, parse_line
from sarseg.infer import predict, window_count
from sarseg.io import write_image
from sarseg.model import build_net
from test_model import saved, segmentation_card

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts it on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib.jobs import status_of  # noqa: E402
from SARSegmentationLib.widgethelpers import JobView  # noqa: E402
from test_widget_helpers import Bar  # noqa: E402

SHAPE = (32, 64, 64)  # z, y, x: 3 x 3 x 3 windows of the tiny patch (16, 32, 32) at overlap 0.5


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return saved(tmp_path_factory.mktemp("model") / "tiny", segmentation_card())[0]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    images, _ = phantom.make_case(5, SHAPE)
    return write_image(tmp_path_factory.mktemp("scan") / "mr.nii.gz", images["mr"], phantom.geometry(SHAPE))


class CountingNet(torch.nn.Module):
    """The tiny network, counting the windows it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.windows = build_net(segmentation_card()), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.net(x)


@pytest.mark.parametrize("shape, tta, overlap", [(SHAPE, False, 0.5), (SHAPE, True, 0.5), ((20, 40, 70), False, 0.25),
                                                 ((8, 20, 32), True, 0.5)])  # the last one is padded to the patch
def test_windows_are_counted_as_monai_runs_them(shape, tta: bool, overlap: float) -> None:
    net, calls = CountingNet(), []
    cfg = InferenceConfig(tta=tta, overlap=overlap, sw_batch_size=4)
    predict(net, torch.rand(1, *shape), (16, 32, 32), SCHEMES["binary"], cfg, torch.device("cpu"),
            lambda done, total: calls.append((done, total)))
    total = (4 if tta else 1) * window_count(shape, (16, 32, 32), overlap)
    assert net.windows == total and calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and len(calls) == 1 + (4 if tta else 1) * -(-window_count(shape, (16, 32, 32), overlap) // 4)
    assert window_count(SHAPE, (16, 32, 32), 0.5) == 27 and window_count((8, 20, 32), (16, 32, 32), 0.5) == 1


def _segment(model: Path, scan: Path, output: Path, *extra: str) -> list[str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["segment", "--model", str(model), "--input", str(scan), "--output", str(output),
                   "--device", "cpu", "--progress", "json", *extra])
    assert rc == EXIT_OK, err.getvalue()
    return out.getvalue().splitlines()


@pytest.mark.parametrize("tta", [False, True])
def test_segment_reports_each_batch_of_windows_and_its_stages(model: Path, scan: Path, tmp_path: Path, tta: bool) -> None:
    lines = _segment(model, scan, tmp_path / "seg.nii.gz", *(["--tta"] if tta else []))
    events = [parse_line(line) for line in lines]
    assert None not in events and sitk.ReadImage(str(tmp_path / "seg.nii.gz")).GetSize() == SHAPE[::-1]
    passes, batches = (4 if tta else 1), 7  # 27 windows in batches of 4, per pass
    total = 2 + passes * 27  # reading, every window of every pass, writing
    assert events[0] == {"event": "start", "step": 0, "device": "cpu", "stage": "reading"}
    assert events[-1]["event"] == "done" and events[-1]["step"] == events[-1]["steps"] == total
    steps = events[1:-1]
    assert [e["event"] for e in steps] == ["step"] * (1 + passes * batches + 1)
    assert [e["stage"] for e in steps] == ["segmenting"] * (1 + passes * batches) + ["writing"]
    assert all(e["steps"] == total for e in steps)
    assert [e["step"] for e in steps[:2]] == [1, 5] and steps[-1]["step"] == total - 1
    fractions = [e["step"] / e["steps"] for e in steps]
    assert fractions == sorted(fractions) and len(set(fractions)) == 1 + passes * batches
    assert sorted({e["pass"] for e in steps if e["stage"] == "segmenting"}) == list(range(1, passes + 1))
    assert all(e["passes"] == passes for e in steps if e["stage"] == "segmenting")
    etas = [e["eta_s"] for e in steps[1:]]  # none before the first batch: no rate yet
    assert "eta_s" not in steps[0] and all(eta >= 0 for eta in etas)
    elapsed = [e["elapsed_s"] for e in events[1:]]
    assert elapsed == sorted(elapsed)


def test_the_module_shows_the_bar_and_eta_moving(model: Path, scan: Path, tmp_path: Path) -> None:
    """The lines as a job's progress file receives them, read as the module reads them: the percent grows,
    lies strictly between 0 and 100 mid-way with an ETA, and the status line names the stage."""
    lines = _segment(model, scan, tmp_path / "seg.nii.gz", "--tta")
    progress = tmp_path / "progress.jsonl"
    reader = ProgressReader(progress)
    label, bar = SimpleNamespace(text=""), Bar()
    view = JobView(label, bar)
    seen = []
    for line in lines:
        with open(progress, "a") as handle:
            handle.write(line + "\n")
        reader.update()
        state = "done" if reader.summary.get("done") else "running"
        status = status_of(SimpleNamespace(id="job-1", kind="segment", state=state, device="cpu", out=None,
                                           exit_code=None, progress=reader.summary))
        view.show(status)
        seen.append((status, bar.range, bar.value, label.text))
    first, *middle, last = seen
    assert first[1] == (0, 0) and first[3] == "segment running: reading"  # busy while the size is unknown
    assert last[0].percent == 100 and last[3] == "segment done"
    percents = [status.percent for status, *_ in seen[1:]]
    assert percents == sorted(percents) and len(set(percents)) > 10
    halfway = middle[len(middle) // 2]
    status, rng, value, text = halfway
    assert 0 < status.percent < 100 and rng == (0, 100) and value == status.percent
    assert status.eta_text and re.fullmatch(rf"segment running: segmenting \(TTA pass [1-4] of 4\), {status.percent} %, "
                                            rf"about {status.eta_text} left", text), text
    writing = middle[-1][0]
    assert writing.summary.startswith("segment running: writing, ")
