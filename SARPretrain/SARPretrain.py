"""SAR Pretrain: self-supervised SAR pretraining, annotate-and-fine-tune, and the jobs panel.

(a) Pretraining on unlabeled scene volumes and/or folders, each tagged with a source name, as a
background ``sarseg pretrain`` job. (b) Annotate and fine-tune: "Add case to training set" writes the
volumes and the corrected segmentation into the chosen model's training set (nnU-Net v2 layout, with
its dataset.json kept up to date); "Fine-tune" trains the model's next version (``<name>-v<N+1>``)
in the background, which then appears in the SAR Segmentation module; no model is overwritten.
(c) The jobs panel lists every SAR job (they are folders, so the list survives a Slicer restart):
state, progress, ETA; Cancel, Resume, Open log, and the loss curve when asked ("Show loss plot": the
module adds nothing to the scene and changes no layout by itself).

The logic lives in ``SARPretrainLib`` and ``SARSegmentationLib`` (pure Python, tested without the
application); this file holds the Slicer module, its thin widget, the module logic and the self-test.
Only Slicer-shipped modules are imported at load time; the engine, torch and MONAI on first use.
"""

import os
import sys
import time
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLSegmentationNode
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

REQUIREMENTS = about.check_slicer(slicer.app.majorVersion, slicer.app.minorVersion)

from SARSegmentationLib.jobs import SubprocessCanceller, default_runner, selftest_missing, selftest_workspace
from SARSegmentationLib.models import FolderModelStore, apply_settings, models_root, work_root
from SARSegmentationLib.protocols import SARLogicError
from SARSegmentationLib.scene import MRMLSceneAdapter
from SARSegmentationLib.widgethelpers import ChannelSelectors, JobView, ModelChooser, new_timer

from SARPretrainLib.jobspanel import JobsPanelLogic
from SARPretrainLib.jobsview import JobsTable, LossPlot
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
            + REQUIREMENTS
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
        self._models = None
        self._caseVolumes = None
        self._jobView = None
        self._jobsTable = None
        self._rows = []
        self._selectedJobId = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SARPretrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SARPretrainLogic()
        from sarseg.core.registry import DEFAULT_INIT  # standard library only

        self._models = ModelChooser(self.ui.finetuneModelComboBox, self.logic.trainableModels, self.logic.model,
                                    "finetuneModelName", default=DEFAULT_INIT)
        self._caseVolumes = ChannelSelectors(self.ui.caseVolumesFrame.layout(), self._updateButtons,
                                             "Channel {number} of the case: the {name} volume.")
        self._jobView = JobView(self.ui.jobStatusLabel, self.ui.jobProgressBar, self.ui.jobLogTextEdit)
        self._jobsTable = JobsTable(self.ui.jobsTable, JOB_COLUMNS)
        self._timer = new_timer(self.refreshJobs)

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
        self.ui.showLossPlotButton.connect("clicked()", self.onShowLossPlot)

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
        self.logic.followDataFolder()  # e.g. another SAR folder was chosen in SAR Segmentation
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
        self.logic.forgetLossPlot()  # its nodes go with the scene; not made again until asked

    def onSceneEndClose(self, caller, event) -> None:
        self._sources = []
        self.refreshSources()
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
        if self._caseVolumes is None:  # not set up yet
            return
        self.ui.removeSourceButton.enabled = bool(self.ui.sourcesTable.selectedItems())
        model = self._models.selected()
        annotation = self._parameterNode.annotation if self._parameterNode else None
        self.ui.addCaseButton.enabled = model is not None and self._caseVolumes.complete and annotation is not None
        self.ui.finetuneButton.enabled = model is not None and self.logic.caseCount(model.name) > 0
        row = self._selectedRow()
        self.ui.cancelJobButton.enabled = bool(row and row.can_cancel and not self.logic.cancelling(row.id))
        self.ui.resumeJobButton.enabled = bool(row and row.can_resume)
        self.ui.openLogButton.enabled = row is not None
        self.ui.showLossPlotButton.enabled = row is not None

    # (a) pretraining sources
    def refreshSources(self) -> None:
        table = self.ui.sourcesTable
        table.setRowCount(len(self._sources))
        for index, source in enumerate(self._sources):
            table.setItem(index, 0, qt.QTableWidgetItem(source.name))
            table.setItem(index, 1, qt.QTableWidgetItem(self.logic.sourceText(source)))
        self._updateButtons()

    def onAddVolumeSource(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot add this volume."):
            self._sources.append(self.logic.volumeSource(self.ui.sourceNameLineEdit.text,
                                                         self.ui.sourceVolumeSelector.currentNode()))
            self.refreshSources()

    def onAddFolderSource(self) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot add this folder."):
            self._sources.append(self.logic.folderSource(self.ui.sourceNameLineEdit.text,
                                                         self.ui.sourceFolderPathLineEdit.currentPath))
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
            job, out = self.logic.startPretraining(p.pretrainName, list(self._sources), preset=p.pretrainPreset,
                                                   steps=p.pretrainSteps or None,
                                                   batchSize=p.pretrainBatchSize or None, device=p.device)
            self._selectedJobId = job.id
            self.logic.watchJob(job.id)
            self._jobView.message(f"Pretraining queued: {out.name}.")
            self.refreshJobs()

    # (b) annotate and fine-tune
    def refreshModels(self) -> None:
        self._models.fill(self._parameterNode)
        self.onModelChanged()

    def onModelChanged(self, index=None) -> None:
        model = self._models.remember(self._parameterNode)
        channels, message = [], "No model yet: start a pretraining first."
        if model is not None:
            try:
                channels = self.logic.caseChannels(model.name, self.ui.channelsLineEdit.text)
                message = self.logic.trainingSetText(model.name)
            except Exception as exc:  # a bad channel list, or no engine
                message = str(exc)
        self.ui.channelsLineEdit.enabled = model is not None and model.kind == "pretrained"
        self._caseVolumes.rebuild(channels)
        self.ui.trainingSetLabel.text = message
        self._updateButtons()

    def onAddCase(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to add the case.", waitCursor=True):
            model = self._models.required()
            p = self._parameterNode
            entry = self.logic.addCase(model.name, self._caseVolumes.nodes(), p.annotation, caseId=p.caseId,
                                       channelsText=p.channels)
            p.caseId = ""
            self.ui.trainingSetLabel.text = f"Added case {entry['case_id']} to the training set of {model.name}."
            self.onModelChanged()

    def onFinetune(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to start fine-tuning.", waitCursor=True):
            model = self._models.required()
            if not dependencies.ensure_dependencies():
                return
            p = self._parameterNode
            job, out = self.logic.finetune(model.name, preset=p.finetunePreset, steps=p.finetuneSteps or None,
                                           batchSize=p.finetuneBatchSize or None, device=p.device)
            self._selectedJobId = job.id
            self.logic.watchJob(job.id)
            self._jobView.message(f"Fine-tuning queued: {out.name} (appears in SAR Segmentation when done).")
            self.refreshJobs()
            self.onModelChanged()

    # (c) jobs
    def _selectedRow(self):
        return next((row for row in self._rows if row.id == self._selectedJobId), None)

    def _requiredRow(self):
        row = self._selectedRow()
        if row is None:
            raise SARLogicError("select a job first")
        return row

    def refreshJobs(self) -> None:
        """The jobs table (only changed cells written), the selected job, and the loss plot's new points."""
        try:
            self._rows = self.logic.jobRows()
        except Exception as exc:  # e.g. the engine is missing
            self._rows = []
            self._jobView.message(f"Cannot list the jobs: {exc}")
        self._selectedJobId = self._jobsTable.show(self._rows, self._selectedJobId)
        self.showSelectedJob()
        try:
            self.logic.updateLossPlot()
        except Exception as exc:  # the plot only; it stops following the job
            self._jobView.message(f"Cannot plot the losses: {exc}")
        self.showEndedJobs()

    def showEndedJobs(self) -> None:
        """Each job started here that has ended: on the status line, a failure also in an error dialog."""
        for outcome in self.logic.endedJobs():
            outcome.show(self._jobView.message, slicer.util.errorDisplay, slicer.util.warningDisplay)

    def onJobSelected(self) -> None:
        rows = sorted({item.row() for item in self.ui.jobsTable.selectedItems()})
        # none highlighted (the user cleared it): no job is acted on either
        self._selectedJobId = self._rows[rows[0]].id if rows and rows[0] < len(self._rows) else None
        self.showSelectedJob()

    def showSelectedJob(self) -> None:
        """Progress bar, ETA and log of the selected job."""
        row = self._selectedRow()
        if row is None:
            self._jobView.idle()
        else:
            self._jobView.read(row.id, self.logic.jobStatus, self.logic.jobLogReader)
        self._updateButtons()

    def onShowLossPlot(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to plot the losses."):
            row = self._requiredRow()
            chart = self.logic.showLossPlot(row.id, row.kind)
            slicer.modules.plots.logic().ShowChartInLayout(chart)  # the user asked: a layout with a plot view

    def onCancelJob(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to cancel the job."):
            row = self._requiredRow()
            self.logic.cancelJob(row.id)
            self._jobView.message(f"Cancelling {row.id} (it saves a checkpoint first)...")
        self._updateButtons()

    def onResumeJob(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to resume the job.", waitCursor=True):
            row = self._requiredRow()
            if not dependencies.ensure_dependencies():
                return
            self.logic.resumeJob(row.id)
            self.logic.watchJob(row.id)
            self.refreshJobs()

    def onOpenLog(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to open the log."):
            row = self._requiredRow()  # the log's end is in the box already; the whole log opens in an editor
            path = self.logic.jobLogPath(row.id)
            if path and os.path.isfile(path):
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(path))


#
# SARPretrainLogic
#


class SARPretrainLogic(ScriptedLoadableModuleLogic):
    """Wires ``SARPretrainLib`` to Slicer: the scene, the models folder, the jobs folder; what the widget
    asks for goes through the methods here.

    Usable without the widget; ``runner``, ``models`` and ``scene`` may be given (tests), else
    Slicer's defaults are used. The engine is imported on first use.
    """

    def __init__(self, runner=None, models=None, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._ownFolders = models is None and runner is None
        if self._ownFolders:  # given ones (the self-test's workspace) keep their own folders
            apply_settings(qt.QSettings())  # the SAR folder chosen in SAR Segmentation
        self.models = models if models is not None else FolderModelStore(models_root())
        self._runnerArg = runner
        self._sceneNode = scene
        self._runner = None
        self._scene = None
        self._pretraining = None
        self._training = None
        self._jobs = None
        self._lossPlot = None

    def getParameterNode(self):
        return SARPretrainParameterNode(super().getParameterNode())

    def followDataFolder(self) -> None:
        """Use the SAR folder chosen meanwhile in SAR Segmentation (models, jobs and exports there)."""
        apply_settings(qt.QSettings())
        if self._ownFolders and self.models.root != models_root():
            self.models = FolderModelStore(models_root())
            self._runner = self._pretraining = self._training = self._jobs = None
            self._lossPlot = None  # it reads its job through the old folder's panel; its nodes are reused when asked

    @property
    def runner(self):
        if self._runner is None:
            dependencies.require_engine()
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

    # (a) pretraining
    def volumeSource(self, name, volumeNode) -> PretrainSource:
        """A scene volume as a pretraining source under ``name`` (checked)."""
        if volumeNode is None:
            raise SARLogicError("select a volume first")
        return PretrainSource(PretrainLogic.check_source_name(name), node_id=volumeNode.GetID())

    def folderSource(self, name, path) -> PretrainSource:
        """A folder (or dataset.json) as a pretraining source under ``name`` (checked)."""
        if not path or not os.path.exists(path):
            raise SARLogicError("choose an existing folder (or dataset.json) first")
        return PretrainSource(PretrainLogic.check_source_name(name), path=path)

    def sourceText(self, source) -> str:
        """What the sources table shows for a source's data: the volume's name, or the path."""
        if not source.node_id:
            return source.path
        node = self.scene.node(source.node_id)
        return f"volume '{self.scene.node_name(node)}'" if node is not None else f"(removed volume {source.node_id})"

    def startPretraining(self, name, sources, preset="small", steps=None, batchSize=None, device="auto"):
        """Submit a background pretraining; returns (job, model folder). See PretrainLogic.start."""
        return self.pretraining.start(name, sources, preset=preset, steps=steps, batch_size=batchSize, device=device)

    # (b) annotate and fine-tune
    def trainableModels(self) -> list:
        return self.models.list(("segmentation", "pretrained"))

    def model(self, name):
        return self.models.get(name)

    def caseChannels(self, modelName, channelsText="") -> list:
        """The channel names a case of this model's training set has (see TrainingSetLogic.channel_names)."""
        return self.training.channel_names(modelName, channelsText)

    def caseCount(self, modelName) -> int:
        """Cases in a model's training set (reads the folder only; no engine needed)."""
        labels = self.models.training_folder(modelName) / "labelsTr"
        return len(list(labels.glob("*.nii.gz"))) if labels.is_dir() else 0

    def trainingSetText(self, modelName) -> str:
        return (f"Training set of {modelName}: {self.caseCount(modelName)} case(s) in "
                f"{self.models.training_folder(modelName)}. Fine-tuning writes {self.models.next_version(modelName)}.")

    def addCase(self, modelName, volumeNodes, annotationNode, caseId="", channelsText=""):
        """Write the volumes and the annotation as a case of the model's training set; returns its entry."""
        return self.training.add_case(modelName, volumeNodes, annotationNode, case_id=caseId,
                                      channels_text=channelsText)

    def finetune(self, modelName, preset=MODEL_PRESET, steps=None, batchSize=None, device="auto"):
        """Submit the fine-tuning of the model's next version (with the model's own preset unless another
        is named); returns (job, model folder)."""
        preset = "" if preset == MODEL_PRESET else preset
        return self.training.finetune(modelName, preset=preset, steps=steps, batch_size=batchSize, device=device)

    # (c) jobs
    def jobRows(self) -> list:
        return self.jobs.rows()

    def jobStatus(self, jobId):
        return self.jobs.status(jobId)

    def jobLog(self, jobId) -> str:
        return self.jobs.log(jobId)

    def jobLogReader(self, jobId):
        """A reader of the job's log returning only what was written since its previous read."""
        return self.jobs.log_reader(jobId)

    def jobLogPath(self, jobId):
        return self.jobs.log_path(jobId)

    def cancelJob(self, jobId) -> bool:
        """Ask the job to stop (it checkpoints first); returns at once."""
        return self.jobs.cancel(jobId)

    def cancelling(self, jobId) -> bool:
        return self._jobs is not None and bool(self._jobs.canceller.busy(jobId))

    def resumeJob(self, jobId):
        return self.jobs.resume(jobId)

    def watchJob(self, jobId) -> None:
        """Show the job's end in the module once (see JobsPanelLogic.ended)."""
        self.jobs.watch(jobId)

    def endedJobs(self) -> list:
        """What to show for the watched jobs that have ended since the last call (JobsPanelLogic.ended)."""
        return self.jobs.ended() if self._jobs is not None else []

    def showLossPlot(self, jobId, kind):
        """Plot the job's losses in the module's one loss plot (made in the scene on first use, reused
        after); returns the chart node. From now on :meth:`updateLossPlot` appends the job's new points."""
        if self._lossPlot is None:
            self._lossPlot = LossPlot(self.scene, self.jobs.loss_history)
        return self._lossPlot.show(jobId, f"SAR {kind} {jobId}: training loss")

    def updateLossPlot(self):
        """Append the plotted job's new points (the jobs timer calls this); None and nothing changed
        when no plot was asked for, no point is new, or the plot was removed from the scene."""
        return self._lossPlot.update() if self._lossPlot is not None else None

    def forgetLossPlot(self) -> None:
        """The scene closes: no loss plot is made or changed until asked again."""
        if self._lossPlot is not None:
            self._lossPlot.forget()

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
    the next version (10 steps each, on a 24x48x48 volume), and find it listed for SAR Segmentation and in
    the jobs panel. Everything is written into a folder of its own (``selftest_workspace``), removed when
    the test passes; nothing is downloaded (without SAR's Python packages the test is skipped)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SARPretrain_whole_flow()

    def test_SARPretrain_whole_flow(self):
        missing = selftest_missing()
        if missing:
            self.skipTest(missing)

        import numpy as np
        from sarseg import mrml, phantom

        with selftest_workspace("SARPretrainTest") as (root, models, runner):
            logic = SARPretrainLogic(runner=runner, models=models)
            shape = (24, 48, 48)
            images, label = phantom.make_case(3, shape)
            volume = mrml.add_volume_node(slicer.mrmlScene, images["mr"], "SAR test MR", phantom.geometry(shape))

            self.delayDisplay("Pretraining on the scene volume in the background")
            job, pretrained = logic.startPretraining("sar-test", [logic.volumeSource("mr", volume)], preset="tiny",
                                                     steps=10, device="CPU")
            status = logic.waitForJob(job.id)
            self.assertEqual(status.state, "done", logic.jobLog(job.id))
            self.assertEqual([m.name for m in models.list(("pretrained",)) if not m.builtin], [pretrained.name])

            self.delayDisplay("Annotating a case and fine-tuning the next version")
            segmentation = mrml.labelmap_to_segmentation(
                slicer.mrmlScene, (label > 0).astype(np.int16), phantom.geometry(shape),
                [{"name": "tumor", "value": 1, "color": [0.9, 0.3, 0.2]}], volume)
            entry = logic.addCase(pretrained.name, [volume], segmentation, channelsText="mr")
            self.assertTrue(os.path.isfile(entry["label"]))
            job, version = logic.finetune(pretrained.name, preset="tiny", steps=10, device="CPU")
            status = logic.waitForJob(job.id)
            self.assertEqual(status.state, "done", logic.jobLog(job.id))
            self.assertEqual([m.name for m in models.list(("segmentation",)) if not m.builtin], [version.name])
            self.assertEqual([label["name"] for label in models.get(version.name).labels], ["tumor"])

            self.delayDisplay("The jobs panel lists both jobs")
            rows = logic.jobRows()
            self.assertEqual([(r.kind, r.state) for r in rows], [("finetune", "done"), ("pretrain", "done")])
            chart = logic.showLossPlot(job.id, "finetune")
            self.assertIs(logic.showLossPlot(job.id, "finetune"), chart)  # one plot, reused
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode"), 1)
        self.delayDisplay("Test passed")
