"""The SAR Pretrain jobs panel leaves the scene and the table alone unless asked: the loss plot
(``SARPretrainLib.jobsview.LossPlot`` on ``MRMLSceneAdapter.loss_plot``) against Slicer's real MRML
(``slicer-core``) and real progress files, and the jobs table (``JobsTable``) with a stand-in widget."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
for _module_dir in (ROOT / "SARSegmentation", ROOT / "SARPretrain"):  # as Slicer puts them on sys.path
    if str(_module_dir) not in sys.path:
        sys.path.insert(0, str(_module_dir))

from SARPretrainLib.jobspanel import JobRow, JobsPanelLogic  # noqa: E402
from SARPretrainLib.jobsview import JobsTable, LossPlot  # noqa: E402
from SARSegmentationLib.protocols import SARLogicError  # noqa: E402
from SARSegmentationLib.scene import loss_rows  # noqa: E402
from sarseg.core.jobs import PROGRESS_FILE  # noqa: E402
from sarseg.core.progress import format_event  # noqa: E402

PLOT_CLASSES = ("vtkMRMLTableNode", "vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode")


def test_loss_rows_merge_the_steps_of_every_loss():
    rows = loss_rows({"loss": [(5.0, 1.0), (10.0, 0.8)], "loss_restore": [(5.0, 0.4)]}, ["loss", "loss_restore"])
    assert rows[0] == [5.0, 1.0, 0.4] and rows[1][:2] == [10.0, 0.8] and math.isnan(rows[1][2])


# ------------------------------------------------------------------------------- the jobs table


class Table:
    """The calls JobsTable makes on a QTableWidget, recorded."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], tuple[str, str]] = {}
        self.rows, self.selected, self.blocked = 0, None, False
        self.calls: list[tuple] = []

    def blockSignals(self, block: bool) -> bool:
        was, self.blocked = self.blocked, block
        return was

    def setRowCount(self, count: int) -> None:
        self.calls.append(("setRowCount", count))
        self.rows = count
        self.cells = {k: v for k, v in self.cells.items() if k[0] < count}

    def setItem(self, row: int, column: int, item) -> None:
        assert self.blocked
        self.calls.append(("setItem", row, column))
        self.cells[row, column] = item

    def selectRow(self, row: int) -> None:
        assert self.blocked
        self.calls.append(("selectRow", row))
        self.selected = row

    def clearSelection(self) -> None:
        self.calls.append(("clearSelection",))
        self.selected = None


def job(job_id: str, state: str = "running", progress: str = "10/100", eta: str = "1 min") -> JobRow:
    return JobRow(id=job_id, kind="pretrain", state=state, progress=progress, percent=10, eta=eta, device="cpu",
                  out=f"/models/{job_id}", can_cancel=True, can_resume=False)


def test_jobs_table_writes_only_what_changed():
    table = Table()
    view = JobsTable(table, ("id", "kind", "state", "progress", "eta", "out"), make_item=lambda text, tip: (text, tip))
    rows = [job("b"), job("a", state="done", progress="100/100", eta="")]
    assert view.show(rows, None) is None  # none chosen yet: none is picked for the user
    assert len([c for c in table.calls if c[0] == "setItem"]) == 12 and table.selected is None
    assert table.cells[0, 5] == ("/models/b", "/models/b") and table.cells[1, 3] == ("100/100", "a")
    assert table.cells[1, 4] == ("", "a")

    table.calls.clear()
    assert view.show([job("b"), job("a", state="done", progress="100/100", eta="")], "a") == "a"
    assert table.calls == [("selectRow", 1)]  # the user's choice; no cell written
    table.calls.clear()
    assert view.show([job("b"), job("a", state="done", progress="100/100", eta="")], "a") == "a"
    assert table.calls == [] and not table.blocked  # every second, nothing changed: nothing done

    view.show([job("b", progress="20/100", eta="50 s"), job("a", state="done", progress="100/100", eta="")], "a")
    assert table.calls == [("setItem", 0, 3), ("setItem", 0, 4)] and table.cells[0, 3][0] == "20/100"

    table.calls.clear()  # a new job on top: the chosen job stays chosen on its new row
    assert view.show([job("c"), job("b", progress="20/100", eta="50 s"),
                      job("a", state="done", progress="100/100", eta="")], "a") == "a"
    assert table.calls[0] == ("setRowCount", 3) and table.calls[-1] == ("selectRow", 2)
    assert view.show([job("c")], "a") is None and table.rows == 1 and table.selected is None  # "a" was removed
    assert view.show([], "c") is None and table.rows == 0 and table.selected is None


def test_the_highlighted_row_is_the_chosen_job_after_a_click_and_a_new_job():
    """The user clicks a job (Qt selects its row; the module follows that job), and a job is added on top
    before the table is shown again: the highlight moves with the chosen job, so Cancel and the table agree."""
    table = Table()
    view = JobsTable(table, ("id", "state"), make_item=lambda text, tip: (text, tip))
    assert view.show([job("c"), job("b")], "b") == "b" and table.selected == 1
    table.selected = 0  # the user clicked "c"
    assert view.show([job("n"), job("c"), job("b")], "c") == "c"
    assert table.selected == 1


# --------------------------------------------------------------------------- the loss plot, MRML

slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML for plain Python) is not installed")

from SARSegmentationLib.scene import LOSS_PLOT_ATTRIBUTE, MRMLSceneAdapter  # noqa: E402


class Jobs:
    """Job folders with progress files, as the jobs panel reads them (the JobRunner calls it makes)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def poll(self, job_id: str):
        return SimpleNamespace(id=job_id, folder=str(self.root / job_id))

    def steps(self, job_id: str, *events: dict) -> None:
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / PROGRESS_FILE, "a", encoding="utf-8") as handle:
            for event in events:
                handle.write(format_event(**event) + "\n")


def step(number: int, **losses: float) -> dict:
    return {"name": "step", "step": number, **losses}


def counts(scene) -> tuple[int, ...]:
    return tuple(scene.GetNumberOfNodesByClass(name) for name in PLOT_CLASSES)


@pytest.fixture
def setup(tmp_path):
    scene = slicer.vtkMRMLScene()
    jobs = Jobs(tmp_path / "jobs")
    panel = JobsPanelLogic(jobs)
    return scene, jobs, LossPlot(MRMLSceneAdapter(scene), panel.loss_history)


def column(table_node, name: str) -> list[float]:
    array = table_node.GetTable().GetColumnByName(name)
    return [array.GetValue(i) for i in range(array.GetNumberOfValues())]


def test_nothing_is_added_until_the_plot_is_asked_for(setup):
    scene, jobs, plot = setup
    jobs.steps("job1", step(5, loss=1.0, loss_restore=0.4))
    before = scene.GetNumberOfNodes()
    for _ in range(3):  # the jobs timer, entering the module
        assert plot.update() is None
    adapter = plot.scene
    assert adapter.loss_plot("job1", plot.history("job1")) is None  # without create: never made
    assert scene.GetNumberOfNodes() == before and counts(scene) == (0, 0, 0)

    jobs.steps("job2")
    with pytest.raises(SARLogicError, match="no loss to plot yet"):
        plot.show("job2", "SAR pretrain job2")
    assert counts(scene) == (0, 0, 0) and plot.job_id is None


def test_asking_twice_reuses_the_nodes_and_the_same_history_changes_nothing(setup):
    scene, jobs, plot = setup
    jobs.steps("job1", step(5, loss=1.0, loss_restore=0.4), step(10, loss=0.8, loss_restore=0.3))
    chart = plot.show("job1", "SAR pretrain job1: training loss")
    assert counts(scene) == (1, 1, 2) and chart.GetTitle() == "SAR pretrain job1: training loss"
    table_node = chart.GetNthPlotSeriesNode(0).GetTableNode()
    assert column(table_node, "step") == [5.0, 10.0] and column(table_node, "loss_restore") == [0.4, 0.3]
    assert [chart.GetNthPlotSeriesNode(i).GetYColumnName() for i in range(2)] == ["loss", "loss_restore"]
    modified = (table_node.GetMTime(), table_node.GetTable().GetMTime(), chart.GetMTime())

    assert plot.show("job1", "SAR pretrain job1: training loss") is chart and counts(scene) == (1, 1, 2)
    assert plot.update() is None  # the timer: no new point
    assert plot.scene.loss_plot("job1", plot.history("job1")) is chart  # even asked directly: untouched
    assert (table_node.GetMTime(), table_node.GetTable().GetMTime(), chart.GetMTime()) == modified

    jobs.steps("job2", step(3, loss=2.0))  # another job: the same nodes, its own losses
    assert plot.show("job2", "SAR finetune job2: training loss") is chart
    assert counts(scene) == (1, 1, 1) and chart.GetNumberOfPlotSeriesNodes() == 1
    assert chart.GetTitle() == "SAR finetune job2: training loss" and column(table_node, "loss") == [2.0]
    assert table_node.GetAttribute(LOSS_PLOT_ATTRIBUTE) == "job2"


def test_new_points_are_appended(setup):
    scene, jobs, plot = setup
    jobs.steps("job1", step(5, loss=1.0))
    chart = plot.show("job1", "job1")
    table_node = chart.GetNthPlotSeriesNode(0).GetTableNode()
    steps_column = table_node.GetTable().GetColumnByName("step")
    jobs.steps("job1", step(10, loss=0.8), step(15, loss=0.7))
    assert plot.update() is chart
    assert column(table_node, "step") == [5.0, 10.0, 15.0] and column(table_node, "loss") == [1.0, 0.8, 0.7]
    assert table_node.GetTable().GetColumnByName("step") is steps_column  # appended, not rebuilt
    modified = table_node.GetMTime()
    assert plot.update() is None and table_node.GetMTime() == modified

    jobs.steps("job1", step(20, loss=0.6), step(25, loss=0.5))
    assert plot.update() is chart and table_node.GetNumberOfRows() == 5 and counts(scene) == (1, 1, 1)

    # resumed from the checkpoint of step 10: steps 15.. are redone, the table follows
    jobs.steps("job1", {"name": "start", "step": 10, "steps": 100}, step(15, loss=0.65))
    assert plot.update() is chart
    assert column(table_node, "step") == [5.0, 10.0, 15.0] and column(table_node, "loss") == [1.0, 0.8, 0.65]
    assert counts(scene) == (1, 1, 1)


def test_a_removed_plot_or_a_closed_scene_is_not_made_again_until_asked(setup):
    scene, jobs, plot = setup
    jobs.steps("job1", step(5, loss=1.0))
    chart = plot.show("job1", "job1")
    scene.RemoveNode(chart)  # the user deletes the chart
    jobs.steps("job1", step(10, loss=0.9))
    assert plot.update() is None and plot.job_id is None
    assert counts(scene) == (1, 0, 1)
    chart = plot.show("job1", "job1")  # asked again: the table is reused, a chart made
    assert counts(scene) == (1, 1, 1) and chart.GetNthPlotSeriesNode(0).GetTableNode().GetNumberOfRows() == 2

    scene.Clear(0)  # File > Close scene
    plot.forget()
    jobs.steps("job1", step(15, loss=0.8))
    assert plot.update() is None and counts(scene) == (0, 0, 0)
    plot.job_id = "job1"  # even a plot still following its job does not bring the nodes back
    assert plot.update() is None and counts(scene) == (0, 0, 0)
