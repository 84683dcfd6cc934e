"""SAR Pretrain: self-supervised SAR pretraining, annotate-and-fine-tune, and the jobs panel.

(a) Pretraining on unlabeled scene volumes and/or folders, each tagged with a source name, as a
background ``sarseg pretrain`` job. (b) Annotate and fine-tune: "Add case to training set" writes the
volumes and the corrected segmentation into the chosen model's training set (nnU-Net v2 layout, with
its dataset.json kept up to date); "Fine-tune" trains the model's next version (``<name>-v<N+1>``)
in the background, which then appears in the SAR Segmentation module; no model is overwritten.
(c) The jobs panel lists every SAR job (they are folders, so the list survives a Slicer restart):
state, progress, ETA, loss curve; Cancel, Resume, Open log.

The logic lives in ``SARPretrainLib`` and ``SARSegmentationLib`` (pure Python, tested without the
application); this file holds the Slicer module, its thin widget, the module logic and the self-test.
Only Slicer-shipped modules are imported at load time; the engine, torch and MONAI on first use.
"""

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from MRMLCorePython import vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # shared with the SAR Segmentation module, installed in the same folder
    import SARSegmentationLib  # noqa: F401
except ImportError:  # a source checkout: the SARSegmentation module folder lies beside this one
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "SARSegmentation"))

from SARSegmentationLib import about, dependencies
from SARSegmentationLib.jobs import SubprocessCanceller, default_runner, log_tail
from SARSegmentationLib.models import FolderModelStore, fill_model_combo, models_root, selected_model, work_root
from SARSegmentationLib.protocols import SARLogicError
from SARSegmentationLib.scene import MRMLSceneAdapter

from SARPretrainLib.jobspanel import JobsPanelLogic
from SARPretrainLib.pretraining import PRESETS, PretrainLogic, PretrainSource
from SARPretrainLib.training import TrainingSetLogic

DEVICES = ["auto", "GPU", "CPU"]
MODEL_PRESET = "model's"
JOB_COLUMNS = ("id", "kind", "state", "progress", "eta", "out")


#
# SARPretrain
#


class SARPretrain(ScriptedLoadableModule):
    """Module description; see ScriptedLoadableModule in Slicer's Base/Python/slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAR Pretrain"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["SARSegmentation"]
        self.parent.contributors = list(about.CONTRIBUTORS)
        self.parent.helpText = (
            "Train SAR models in the background. <b>Pretraining</b>: self-supervised Scale-Aware Restoration "
            "on unlabeled scans (scene volumes or folders), each tagged with a source name such as ct, mr or "
            "pet. <b>Annotate and fine-tune</b>: correct a segmentation, add it to the model's training set, "
            "and fine-tune the model's next version; it appears in the <b>SAR Segmentation</b> module (older "
            "versions are kept). <b>Jobs</b>: progress, ETA and loss of every job; cancel, resume, log. "
            "Jobs go on when Slicer closes and are listed again after a restart. "
            f'See the <a href="{about.HOMEPAGE}">documentation</a>.'
        )
        self.parent.acknowledgementText = about.ACKNOWLEDGEMENT


#
# SARPretrainParameterNode
#


@parameterNodeWrapper
class SARPretrainParameterNode:
    """The module's settings, saved with the scene (0 steps / batch size: the preset's)."""

    pretrainName: Annotated[str, Default("sar-pretrained")]
    pretrainPreset: Annotated[str, Choice(list(PRESETS)), Default("small")]
    pretrainSteps: Annotated[int, Minimum(0), Default(0)]
    pretrainBatchSize: Annotated[int, Minimum(0), Default(0)]
    device: Annotated[str, Choice(DEVICES), Default("auto")]
    finetuneModelName: str
    channels: str
    annotation: vtkMRMLSegmentationNode
    caseId: str
    finetunePreset: Annotated[str, Choice([MODEL_PRESET, *PRESETS]), Default(MODEL_PRESET)]
    finetuneSteps: Annotated[int, Minimum(0), Default(0)]
    finetuneBatchSize: Annotated[int, Minimum(0), Default(0)]


#
# SARPretrainWidget
#


class SARPretrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: edits the parameter node, starts jobs and follows them. No computation here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._sources = []
        self._caseSelectors = []
        self._updatingModels = False
        self._selectedJobId = None
        self._shownChartJobId = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SARPretrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SARPretrainLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(1000)
        self._timer.connect("timeout()", self.onTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # (a) pretraining
        self.ui.addVolumeSourceButton.connect("clicked()", self.onAddVolumeSource)
        self.ui.addFolderSourceButton.connect("clicked()", self.onAddFolderSource)
        self.ui.removeSourceButton.connect("clicked()", self.onRemoveSource)
        self.ui.sourcesTable.connect("itemSelectionChanged()", self._updateButtons)
        self.ui.startPretrainButton.connect("clicked()", self.onStartPretraining)
        # (b) annotate and fine-tune
        self.ui.finetuneModelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.refreshModelsButton.connect("clicked()", self.refreshModels)
        self.ui.channelsLineEdit.connect("editingFinished()", self.onModelChanged)
        self.ui.addCaseButton.connect("clicked()", self.onAddCase)
        self.ui.finetuneButton.connect("clicked()", self.onFinetune)
        # (c) jobs
        self.ui.jobsTable.connect("itemSelectionChanged()", self.onJobSelected)
        self.ui.refreshJobsButton.connect("clicked()", self.refreshJobs)
        self.ui.cancelJobButton.connect("clicked()", self.onCancelJob)
        self.ui.resumeJobButton.connect("clicked()", self.onResumeJob)
        self.ui.openLogButton.connect("clicked()", self.onOpenLog)

        self.initializeParameterNode()
        self.refreshModels()
        self.refreshSources()
        self.refreshJobs()
        self._timer.start()  # jobs are followed while this widget exists; listing them only reads files

    def cleanup(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshModels()
        self.refreshJobs()
        self._timer.start()

    def exit(self) -> None:
        self._timer.stop()  # the jobs go on; the panel catches up when the module is shown again
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        self._sources = []
        self.refreshSources()
        self._shownChartJobId = None
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.onModelChanged()

    # parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[SARPretrainParameterNode]) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # widgets with a "SlicerParameterName" property in the .ui file are connected here
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        if not hasattr(self, "ui"):
            return
        self.ui.removeSourceButton.enabled = bool(self.ui.sourcesTable.selectedItems())
        model = self._currentModel()
        volumesReady = bool(self._caseSelectors) and all(s.currentNode() is not None for s in self._caseSelectors)
        annotation = self._parameterNode.annotation if self._parameterNode else None
        self.ui.addCaseButton.enabled = model is not None and volumesReady and annotation is not None
        self.ui.finetuneButton.enabled = model is not None and self.logic.caseCount(model.name) > 0
        row = self._selectedRow()
        self.ui.cancelJobButton.enabled = bool(row and row.can_cancel and not self.logic.cancelling(row.id))
        self.ui.resumeJobButton.enabled = bool(row and row.can_resume)
        self.ui.openLogButton.enabled = row is not None

    # (a) pretraining sources
    def refreshSources(self) -> None:
        table = self.ui.sourcesTable
        table.setRowCount(len(self._sources))
        for index, source in enumerate(self._sources):
            table.setItem(index, 0, qt.QTableWidgetItem(source.name))
            data = source.path
            if source.node_id:
                node = slicer.mrmlScene.GetNodeByID(source.node_id)
                data = f"volume '{node.GetName()}'" if node is not None else f"(removed volume {source.node_id})"
            table.setItem(index, 1, qt.QTableWidgetItem(data))
        self._updateButtons()

    def onAddVolumeSource(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot add this volume."):
            node = self.ui.sourceVolumeSelector.currentNode()
            if node is None:
                raise SARLogicError("select a volume first")
            name = PretrainLogic.check_source_name(self.ui.sourceNameLineEdit.text)
            self._sources.append(PretrainSource(name, node_id=node.GetID()))
            self.refreshSources()

    def onAddFolderSource(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot add this folder."):
            path = self.ui.sourceFolderPathLineEdit.currentPath
            if not path or not os.path.exists(path):
                raise SARLogicError("choose an existing folder (or dataset.json) first")
            name = PretrainLogic.check_source_name(self.ui.sourceNameLineEdit.text)
            self._sources.append(PretrainSource(name, path=path))
            self.refreshSources()

    def onRemoveSource(self) -> None:
        rows = sorted({item.row() for item in self.ui.sourcesTable.selectedItems()}, reverse=True)
        for row in rows:
            if 0 <= row < len(self._sources):
                del self._sources[row]
        self.refreshSources()

    def onStartPretraining(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to start pretraining.", waitCursor=True):
            if not dependencies.ensure_dependencies():
                return
            p = self._parameterNode
            job, out = self.logic.pretraining.start(p.pretrainName, list(self._sources), preset=p.pretrainPreset,
                                                    steps=p.pretrainSteps or None,
                                                    batch_size=p.pretrainBatchSize or None, device=p.device)
            self._selectedJobId = job.id
            self.ui.jobStatusLabel.text = f"Pretraining queued: {out.name}."
            self.refreshJobs()

    # (b) annotate and fine-tune
    def refreshModels(self) -> None:
        current = self._parameterNode.finetuneModelName if self._parameterNode else ""
        self._updatingModels = True
        try:
            fill_model_combo(self.ui.finetuneModelComboBox, self.logic.models.list(("segmentation", "pretrained")), current)
        finally:
            self._updatingModels = False
        self.onModelChanged()

    def _currentModel(self):
        return selected_model(self.ui.finetuneModelComboBox, self.logic.models)

    def onModelChanged(self, index=None) -> None:
        if self._updatingModels:
            return
        model = self._currentModel()
        if self._parameterNode and model is not None and self._parameterNode.finetuneModelName != model.name:
            self._parameterNode.finetuneModelName = model.name
        channels, message = [], "No model yet: start a pretraining first."
        if model is not None:
            try:
                channels = self.logic.training.channel_names(model.name, self.ui.channelsLineEdit.text)
                message = (f"Training set of {model.name}: {self.logic.caseCount(model.name)} case(s) in "
                           f"{self.logic.models.training_folder(model.name)}. "
                           f"Fine-tuning writes {self.logic.models.next_version(model.name)}.")
            except Exception as exc:  # a bad channel list, or no engine
                message = str(exc)
        self.ui.channelsLineEdit.enabled = model is not None and model.kind == "pretrained"
        self._rebuildCaseSelectors(channels)
        self.ui.trainingSetLabel.text = message
        self._updateButtons()

    def _rebuildCaseSelectors(self, names) -> None:
        previous = [selector.currentNode() for selector in self._caseSelectors]
        layout = self.ui.caseVolumesFrame.layout()
        while layout.rowCount() > 0:
            layout.removeRow(0)
        self._caseSelectors = []
        for index, name in enumerate(names):
            selector = slicer.qMRMLNodeComboBox()
            selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
            selector.showChildNodeTypes = False
            selector.addEnabled = False
            selector.removeEnabled = False
            selector.noneEnabled = True
            selector.noneDisplay = f"Select the {name} volume"
            selector.setMRMLScene(slicer.mrmlScene)
            selector.setToolTip(f"Channel {index + 1} of the case: the {name} volume.")
            if index < len(previous) and previous[index] is not None:
                selector.setCurrentNode(previous[index])
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self._updateButtons)
            layout.addRow(f"{name} volume:", selector)
            self._caseSelectors.append(selector)

    def onAddCase(self) -> None:
        model = self._currentModel()
        with slicer.util.tryWithErrorDisplay("Failed to add the case.", waitCursor=True):
            if model is None:
                raise SARLogicError("choose a model first")
            if not dependencies.ensure_engine_on_path():
                raise SARLogicError("the SAR engine was not found; reinstall the extension")
            p = self._parameterNode
            entry = self.logic.training.add_case(model.name, [s.currentNode() for s in self._caseSelectors],
                                                 p.annotation, case_id=p.caseId, channels_text=p.channels)
            p.caseId = ""
            self.ui.trainingSetLabel.text = f"Added case {entry['case_id']} to the training set of {model.name}."
            self.onModelChanged()

    def onFinetune(self) -> None:
        model = self._currentModel()
        with slicer.util.tryWithErrorDisplay("Failed to start fine-tuning.", waitCursor=True):
            if model is None:
                raise SARLogicError("choose a model first")
            if not dependencies.ensure_dependencies():
                return
            p = self._parameterNode
            preset = "" if p.finetunePreset == MODEL_PRESET else p.finetunePreset
            job, out = self.logic.training.finetune(model.name, preset=preset, steps=p.finetuneSteps or None,
                                                    batch_size=p.finetuneBatchSize or None, device=p.device)
            self._selectedJobId = job.id
            self.ui.jobStatusLabel.text = f"Fine-tuning queued: {out.name} (appears in SAR Segmentation when done)."
            self.refreshJobs()
            self.onModelChanged()

    # (c) jobs
    def _selectedRow(self):
        if self._selectedJobId is None:
            return None
        return next((row for row in getattr(self, "_rows", []) if row.id == self._selectedJobId), None)

    def refreshJobs(self) -> None:
        try:
            self._rows = self.logic.jobs.rows()
        except Exception as exc:  # e.g. the engine is missing
            self._rows = []
            self.ui.jobStatusLabel.text = f"Cannot list the jobs: {exc}"
        table = self.ui.jobsTable
        wasBlocked = table.blockSignals(True)
        try:
            table.setRowCount(len(self._rows))
            selectedIndex = -1
            for index, row in enumerate(self._rows):
                for column, key in enumerate(JOB_COLUMNS):
                    item = qt.QTableWidgetItem(str(getattr(row, key) or ""))
                    item.setToolTip(row.out if key == "out" else row.id)
                    table.setItem(index, column, item)
                if row.id == self._selectedJobId:
                    selectedIndex = index
            if selectedIndex < 0 and self._rows:
                selectedIndex = 0
                self._selectedJobId = self._rows[0].id
            if selectedIndex >= 0:
                table.selectRow(selectedIndex)
        finally:
            table.blockSignals(wasBlocked)
        self.showSelectedJob()

    def onJobSelected(self) -> None:
        rows = sorted({item.row() for item in self.ui.jobsTable.selectedItems()})
        if rows and rows[0] < len(getattr(self, "_rows", [])):
            self._selectedJobId = self._rows[rows[0]].id
        self.showSelectedJob()

    def showSelectedJob(self) -> None:
        """Progress bar, ETA, log and loss curve of the selected job."""
        row = self._selectedRow()
        if row is None:
            self.ui.jobProgressBar.setValue(0)
            self._updateButtons()
            return
        try:
            status = self.logic.jobs.status(row.id)
            self.ui.jobProgressBar.setValue(status.percent)
            self.ui.jobStatusLabel.text = status.summary + (f" -> {status.out}" if status.out else "")
            self.ui.jobLogTextEdit.setPlainText(log_tail(self.logic.jobs.log(row.id), 200))
            history = self.logic.jobs.loss_history(row.id)
            chart = self.logic.scene.update_loss_plot(f"SAR {row.kind} {row.id}", history) if history else None
            if chart is not None and self._shownChartJobId != row.id:
                self._shownChartJobId = row.id
                slicer.modules.plots.logic().ShowChartInLayout(chart)
        except Exception as exc:
            self.ui.jobStatusLabel.text = f"Cannot read job {row.id}: {exc}"
        self._updateButtons()

    def onTimer(self) -> None:
        self.refreshJobs()

    def onCancelJob(self) -> None:
        row = self._selectedRow()
        if row is None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to cancel the job."):
            self.logic.jobs.cancel(row.id)
            self.ui.jobStatusLabel.text = f"Cancelling {row.id} (it saves a checkpoint first)..."
        self._updateButtons()

    def onResumeJob(self) -> None:
        row = self._selectedRow()
        if row is None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to resume the job.", waitCursor=True):
            if not dependencies.ensure_dependencies():
                return
            self.logic.jobs.resume(row.id)
            self.refreshJobs()

    def onOpenLog(self) -> None:
        row = self._selectedRow()
        if row is None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to open the log."):
            self.ui.jobLogTextEdit.setPlainText(self.logic.jobs.log(row.id))
            path = self.logic.jobs.log_path(row.id)
            if path and os.path.isfile(path):
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(path))


#
# SARPretrainLogic
#


class SARPretrainLogic(ScriptedLoadableModuleLogic):
    """Wires ``SARPretrainLib`` to Slicer: the scene, the models folder, the jobs folder.

    Usable without the widget; ``runner``, ``models`` and ``scene`` may be given (tests), else
    Slicer's defaults are used. The engine is imported on first use.
    """

    def __init__(self, runner=None, models=None, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.models = models if models is not None else FolderModelStore(models_root())
        self._runnerArg = runner
        self._sceneNode = scene
        self._runner = None
        self._scene = None
        self._pretraining = None
        self._training = None
        self._jobs = None

    def getParameterNode(self):
        return SARPretrainParameterNode(super().getParameterNode())

    @property
    def runner(self):
        if self._runner is None:
            if not dependencies.ensure_engine_on_path():
                raise SARLogicError("the SAR engine (the 'sarseg' Python package) was not found; reinstall the extension")
            self._runner = self._runnerArg if self._runnerArg is not None else default_runner()
        return self._runner

    @property
    def scene(self) -> MRMLSceneAdapter:
        if self._scene is None:
            self._scene = MRMLSceneAdapter(self._sceneNode or slicer.mrmlScene)
        return self._scene

    @property
    def pretraining(self) -> PretrainLogic:
        if self._pretraining is None:
            self._pretraining = PretrainLogic(self.runner, self.models, self.scene, work_root() / "pretrain")
        return self._pretraining

    @property
    def training(self) -> TrainingSetLogic:
        if self._training is None:
            self._training = TrainingSetLogic(self.runner, self.models, self.scene)
        return self._training

    @property
    def jobs(self) -> JobsPanelLogic:
        if self._jobs is None:
            runner = self.runner
            self._jobs = JobsPanelLogic(runner, SubprocessCanceller(runner.root, getattr(runner, "python", None)))
        return self._jobs

    def caseCount(self, modelName) -> int:
        """Cases in a model's training set (reads the folder only; no engine needed)."""
        labels = self.models.training_folder(modelName) / "labelsTr"
        return len(list(labels.glob("*.nii.gz"))) if labels.is_dir() else 0

    def cancelling(self, jobId) -> bool:
        return self._jobs is not None and bool(self._jobs.canceller.busy(jobId))

    def waitForJob(self, jobId, timeout=900.0):
        """Wait for a job while keeping the GUI alive (scripts and tests); returns its final status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.jobs.status(jobId)
            if status.finished:
                return status
            if time.monotonic() > deadline:
                raise SARLogicError(f"job {jobId} still {status.state} after {timeout:.0f} s")
            slicer.app.processEvents()
            time.sleep(0.2)


#
# SARPretrainTest
#


class SARPretrainTest(ScriptedLoadableModuleTest):
    """The whole flow in Slicer on a generated volume: pretrain a tiny model, annotate a case, fine-tune
    the next version, and find it listed for SAR Segmentation and in the jobs panel."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SARPretrain_whole_flow()

    def test_SARPretrain_whole_flow(self):
        self.delayDisplay("Checking the Python packages SAR needs")
        self.assertTrue(dependencies.ensure_dependencies(ask=False), "the SAR dependencies are not available")

        import numpy as np
        from sarseg import mrml, phantom

        root = Path(slicer.app.temporaryPath) / f"SARPretrainTest-{os.getpid()}-{int(time.time())}"
        models = FolderModelStore(root / "models")
        runner = default_runner(root / "jobs", env={"OMP_NUM_THREADS": "2"})
        logic = SARPretrainLogic(runner=runner, models=models)
        shape = (24, 48, 48)
        images, label = phantom.make_case(3, shape)
        volume = mrml.add_volume_node(slicer.mrmlScene, images["mr"], "SAR test MR", phantom.geometry(shape))

        self.delayDisplay("Pretraining on the scene volume in the background")
        job, pretrained = logic.pretraining.start("sar-test", [PretrainSource("mr", node_id=volume.GetID())],
                                                  preset="tiny", steps=10, device="CPU")
        status = logic.waitForJob(job.id)
        self.assertEqual(status.state, "done", logic.jobs.log(job.id))
        self.assertEqual([m.name for m in models.list(("pretrained",))], [pretrained.name])

        self.delayDisplay("Annotating a case and fine-tuning the next version")
        segmentation = mrml.labelmap_to_segmentation(
            slicer.mrmlScene, (label > 0).astype(np.int16), phantom.geometry(shape),
            [{"name": "tumor", "value": 1, "color": [0.9, 0.3, 0.2]}], volume)
        entry = logic.training.add_case(pretrained.name, [volume], segmentation, channels_text="mr")
        self.assertTrue(os.path.isfile(entry["label"]))
        job, version = logic.training.finetune(pretrained.name, preset="tiny", steps=10, device="CPU")
        status = logic.waitForJob(job.id)
        self.assertEqual(status.state, "done", logic.jobs.log(job.id))
        self.assertEqual([m.name for m in models.list(("segmentation",))], [version.name])
        self.assertEqual([label["name"] for label in models.get(version.name).labels], ["tumor"])

        self.delayDisplay("The jobs panel lists both jobs")
        rows = logic.jobs.rows()
        self.assertEqual([(r.kind, r.state) for r in rows], [("finetune", "done"), ("pretrain", "done")])
        self.assertTrue(logic.jobs.loss_history(job.id))
        chart = logic.scene.update_loss_plot(f"SAR finetune {job.id}", logic.jobs.loss_history(job.id))
        self.assertIsNotNone(chart)
        logging.info(f"SAR Pretrain test folder: {root}")
        self.delayDisplay("Test passed")
