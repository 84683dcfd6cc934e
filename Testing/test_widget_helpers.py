"""What the two module widgets share (``SARSegmentationLib.widgethelpers``), with small plain-Python
stand-ins for the Qt widgets and the module logic passed in as arguments (no Qt, no Slicer)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "SARSegmentation") not in sys.path:  # as Slicer puts it on sys.path
    sys.path.insert(0, str(ROOT / "SARSegmentation"))

from SARSegmentationLib.jobs import JobStatus  # noqa: E402
from SARSegmentationLib.protocols import SARLogicError  # noqa: E402
from SARSegmentationLib.widgethelpers import ChannelSelectors, JobFollower, JobView, ModelChooser  # noqa: E402


# ------------------------------------------------------------------------------------- stand-ins


class ListCombo:
    """A combo box: the calls ModelChooser makes; ``changes`` counts the change signals it sent."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.currentIndex = -1
        self.blocked = False
        self.changes = 0

    def blockSignals(self, block: bool) -> bool:
        was, self.blocked = self.blocked, block
        return was

    def clear(self) -> None:
        self.items = []
        self.setCurrentIndex(-1)

    def addItem(self, text: str, data: str) -> None:
        self.items.append((text, data))

    def findData(self, data: str) -> int:
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def setCurrentIndex(self, index: int) -> None:
        self.changes += not self.blocked and index != self.currentIndex
        self.currentIndex = index

    def itemData(self, index: int):
        return self.items[index][1] if 0 <= index < len(self.items) else None


@dataclass
class Model:
    name: str

    @property
    def display_name(self) -> str:
        return f"{self.name} (segmentation)"


class Store:
    """The two callables a ModelChooser takes: list the models, read one again."""

    def __init__(self, *names: str) -> None:
        self.models = {name: Model(name) for name in names}

    def list(self) -> list[Model]:
        return list(self.models.values())

    def get(self, name: str) -> Model:
        if name not in self.models:
            raise SARLogicError(f"no model named {name!r}")
        return self.models[name]


class Parameters:
    """A parameter node: counts the writes (each one is a Modified event in Slicer)."""

    def __init__(self, modelName: str = "") -> None:
        object.__setattr__(self, "writes", 0)
        object.__setattr__(self, "modelName", modelName)

    def __setattr__(self, name, value) -> None:
        object.__setattr__(self, "writes", self.writes + 1)
        object.__setattr__(self, name, value)


class FormLayout:
    def __init__(self) -> None:
        self.rows: list[tuple[str, object]] = []

    def rowCount(self) -> int:
        return len(self.rows)

    def removeRow(self, index: int) -> None:
        del self.rows[index]

    def addRow(self, text, widget=None) -> None:  # (label text, widget), or a widget over both columns
        self.rows.append((text, widget) if widget is not None else ("", text))


class Selector:
    def __init__(self, name: str, tooltip: str) -> None:
        self.name, self.tooltip, self.node, self.connections = name, tooltip, None, []

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node) -> None:
        self.node = node

    def connect(self, signal: str, slot) -> None:
        self.connections.append((signal, slot))


class Bar:
    def __init__(self) -> None:
        self.range, self.value, self.visible = (0, 100), 0, True

    def setRange(self, low: int, high: int) -> None:
        self.range = (low, high)

    def setValue(self, value: int) -> None:
        self.value = value

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False


class LogBox:
    def __init__(self) -> None:
        self.text = None

    def setPlainText(self, text: str) -> None:
        self.text = text

    def appendPlainText(self, text: str) -> None:  # QPlainTextEdit: a new paragraph
        self.text = text if self.text is None else f"{self.text}\n{text}"


class NoLog:
    """A job log that stays empty (``LogReader``'s interface)."""

    def read(self, final: bool = False) -> tuple[str, bool]:
        return "", False


class Timer:
    def __init__(self, callback) -> None:
        self.callback, self.running = callback, False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


def status(state: str = "running", step=None, steps=None, out=None) -> JobStatus:
    fraction = step / steps if step is not None and steps else None
    return JobStatus("job-1", "segment", state, step=step, steps=steps, fraction=fraction, out=out)


# ------------------------------------------------------------------------------------- the tests


def test_model_chooser_keeps_the_remembered_model_and_forgets_removed_ones():
    store, combo = Store("brain", "brain-v2"), ListCombo()
    chooser = ModelChooser(combo, store.list, store.get, "modelName")
    parameters = Parameters("brain-v2")
    chooser.fill(parameters)
    assert combo.items == [("brain (segmentation)", "brain"), ("brain-v2 (segmentation)", "brain-v2")]
    assert chooser.selected().name == "brain-v2" and combo.changes == 0 and not combo.blocked
    assert chooser.remember(parameters).name == "brain-v2" and parameters.writes == 0  # unchanged: not written

    combo.setCurrentIndex(0)  # the user picks another model
    assert chooser.remember(parameters).name == "brain" and (parameters.modelName, parameters.writes) == ("brain", 1)
    parameters.modelName = "gone"
    chooser.fill(parameters)
    assert chooser.selected().name == "brain"  # the first model when the remembered one is not listed
    chooser.fill(None)  # no parameter node (scene closing)
    assert chooser.remember(None).name == "brain"

    del store.models["brain"]  # removed behind the widget's back
    assert chooser.selected() is None and chooser.remember(parameters) is None
    with pytest.raises(SARLogicError, match="choose a model first"):
        chooser.required()
    store.models.clear()
    chooser.fill(parameters)
    assert combo.items == [] and combo.currentIndex == -1 and chooser.selected() is None


def test_model_chooser_starts_on_its_default_model():
    """SAR Pretrain offers the built-in sar-base first, unless the user chose a model before."""
    store, combo = Store("brain", "sar-base"), ListCombo()
    chooser = ModelChooser(combo, store.list, store.get, "modelName", default="sar-base")
    chooser.fill(Parameters(""))
    assert chooser.selected().name == "sar-base"
    chooser.fill(Parameters("brain"))
    assert chooser.selected().name == "brain"
    chooser = ModelChooser(combo, Store("brain").list, store.get, "modelName", default="sar-base")
    chooser.fill(Parameters(""))
    assert chooser.selected().name == "brain"  # the default is not there: the first


def test_channel_selectors_match_by_name_and_keep_each_channels_volume_across_models():
    layout, changed = FormLayout(), []
    scene = ["pat1_t1ce", "notes", "pat1_flair", "pat1_t2"]  # scene order is not channel order
    selectors = ChannelSelectors(layout, lambda: changed.append(1), "Input channel {number} of the model: the {name} "
                                 "volume.", make=Selector, make_note=lambda: SimpleNamespace(text=""),
                                 volumes=lambda: scene, name_of=str)
    assert not selectors.complete and selectors.nodes() == []
    selectors.rebuild(["flair", "t1c"])
    assert [text for text, _ in layout.rows] == ["flair volume:", "t1c volume:", ""]
    assert selectors.nodes() == ["pat1_flair", "pat1_t1ce"] and selectors.complete
    assert layout.rows[1][1].tooltip == "Input channel 2 of the model: the t1c volume."
    assert all(s.connections == [("currentNodeChanged(vtkMRMLNode*)", selectors._changed)] for s in selectors.selectors)
    note = layout.rows[2][1]
    assert note.text == "FLAIR <- 'pat1_flair' (name match)\nT1c <- 'pat1_t1ce' (name match)"

    selectors.selectors[0].setCurrentNode("notes")  # the user's choice, as the combo box tells it
    selectors._changed("notes")
    selectors.selectors[1].setCurrentNode(None)
    selectors._changed(None)
    assert changed == [1, 1] and not selectors.complete
    assert note.text == "FLAIR <- 'notes' (your choice)\nT1c: none chosen; choose one"

    selectors.rebuild(["t2", "t1c", "flair"])  # each channel keeps its volume by name, not position
    assert selectors.nodes() == ["pat1_t2", "pat1_t1ce", "notes"] and layout.rowCount() == 4
    assert layout.rows[3][1].text.splitlines() == [
        "T2 <- 'pat1_t2' (name match)", "T1c <- 'pat1_t1ce' (name match)", "FLAIR <- 'notes' (your choice)"]
    scene.remove("pat1_t2")  # gone from the scene: not kept
    selectors.rebuild(["mr", "t2"])
    assert selectors.nodes() == [None, None]  # two MR sequences fit MR equally: the user chooses
    assert layout.rows[2][1].text == ("MR: 2 volumes named like it ('pat1_t1ce', 'pat1_flair'); choose one\n"
                                      "T2: no volume named like it; choose one")
    selectors.rebuild([])
    assert layout.rows == [] and not selectors.complete and selectors.note is None


def test_job_view_shows_state_progress_and_the_logs_end():
    label, bar, box = SimpleNamespace(text=""), Bar(), LogBox()
    view = JobView(label, bar, box, hide_when_idle=True, log_lines=2)
    view.show(status("running"))
    assert bar.range == (0, 0) and bar.visible  # busy until steps are known
    assert label.text == "segment running"
    view.show(status("running", 30, 120, out="/models/brain-v2"))
    assert (bar.range, bar.value) == ((0, 100), 25)
    assert label.text == "segment running: step 30/120 -> /models/brain-v2"
    view.show(status("queued"))
    assert (bar.range, bar.value, bar.visible) == ((0, 100), 0, True)
    view.show(status("done", 1, 1))
    assert (bar.value, bar.visible) == (100, False)
    view.message("segmentation failed:\nTraceback ...")
    assert label.text == "segmentation failed:"

    def unreadable(job_id):
        raise SARLogicError(f"{job_id}: no such job under /jobs")

    assert view.read("job-9", unreadable, lambda job_id: NoLog()) is None
    assert label.text == "Cannot read job job-9: job-9: no such job under /jobs" and not bar.visible
    shown = view.read("job-1", lambda job_id: status("running", 1, 4), lambda job_id: NoLog())
    assert shown.step == 1 and box.text == "" and bar.visible and bar.value == 25


def test_job_follower_shows_the_job_until_it_ends_then_hands_it_over_once():
    states = iter([status("queued"), status("running", 2, 4), status("done", 4, 4)])
    ended, timers = [], []
    view = JobView(SimpleNamespace(text=""), Bar(), LogBox(), hide_when_idle=True)
    follower = JobFollower(view, lambda job_id: next(states), lambda job_id: NoLog(), lambda *args: ended.append(args),
                           timer=lambda callback: timers.append(Timer(callback)) or timers[-1])
    timer = timers[0]
    assert timer.callback == follower.tick and not timer.running and follower.job_id is None

    follower.follow("job-1")  # shown at once, then on every tick
    assert timer.running and follower.job_id == "job-1" and view.label.text == "segment queued"
    timer.callback()
    assert view.bar.value == 50 and timer.running and ended == []
    timer.callback()
    assert not timer.running and follower.job_id is None and not view.bar.visible
    assert [(job_id, s.state) for job_id, s in ended] == [("job-1", "done")]
    timer.callback()  # a late tick changes nothing
    assert len(ended) == 1 and not timer.running

    def gone(job_id):
        raise OSError("jobs folder removed")

    lost = JobFollower(view, gone, lambda job_id: NoLog(), lambda *args: ended.append(args), timer=Timer)
    lost.follow("job-2")
    assert ended[-1] == ("job-2", None) and not lost.timer.running and lost.job_id is None
    assert view.label.text == "Cannot read job job-2: jobs folder removed"
