"""SAR Segmentation: segment tumors with a SAR model (Scale-Aware Restoration pretraining, fine-tuned).

The work runs as background ``sarseg segment`` jobs (``sarseg.core.jobs``), so Slicer never blocks; a timer
follows the job and loads the result as segments when it is done. The logic lives in
``SARSegmentationLib`` (pure Python, tested without the application); this file holds the Slicer
module, its widget (thin), a small module logic wiring the Lib to Slicer, and the self-test.

Only Slicer-shipped modules are imported here at load time; the engine (``sarseg``), torch and MONAI are
imported on first use, after :func:`SARSegmentationLib.dependencies.ensure_dependencies`.
"""

import time
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk

from SARSegmentationLib import about  # standard library only: the Slicer version is checked before the rest

REQUIREMENTS = about.check_slicer(slicer.app.majorVersion, slicer.app.minorVersion)

from slicer import (vtkMRMLMarkupsFiducialNode, vtkMRMLMarkupsNode, vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode,
                    vtkMRMLSegmentationNode)
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from SARSegmentationLib import dependencies
from SARSegmentationLib.interactive import DEBOUNCE_MS, LESION_CLICK, SAMPLE, SAMPLE_HINT, InteractiveLogic
from SARSegmentationLib.jobs import SubprocessCanceller, default_runner, selftest_missing, selftest_workspace
from SARSegmentationLib.models import (FolderModelStore, apply_settings, folders_text, kept_jobs, models_root,
                                       sar_home, set_data_folder, set_kept_jobs, work_root)
from SARSegmentationLib.protocols import SARLogicError
from SARSegmentationLib.scene import MRMLSceneAdapter
from SARSegmentationLib.segmentation import SegmentationLogic
from SARSegmentationLib.widgethelpers import ChannelSelectors, JobFollower, JobView, ModelChooser, new_timer

DEVICES = ["auto", "GPU", "CPU"]
# the Interactive section's markups: parameter, node class, name, color
PROMPT_NODES = (("positivePoints", "vtkMRMLMarkupsFiducialNode", "SAR inside", (0.2, 0.85, 0.3)),
                ("negativePoints", "vtkMRMLMarkupsFiducialNode", "SAR outside", (0.95, 0.25, 0.2)),
                ("promptBox", "vtkMRMLMarkupsROINode", "SAR box", (0.3, 0.6, 1.0)))
MARKUP_EVENTS = (vtkMRMLMarkupsNode.PointAddedEvent, vtkMRMLMarkupsNode.PointRemovedEvent,
                 vtkMRMLMarkupsNode.PointModifiedEvent, vtk.vtkCommand.ModifiedEvent)


#
# SARSegmentation
#


class SARSegmentation(ScriptedLoadableModule):
    """Module description; see ScriptedLoadableModule in Slicer's Base/Python/slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SAR Segmentation"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = list(about.CONTRIBUTORS)
        self.parent.helpText = (
            "Segment tumors with a model fine-tuned from self-supervised Scale-Aware Restoration (SAR) "
            "pretraining. Choose a model, one input volume per model channel (e.g. FLAIR and T1c), "
            "optionally a region of interest, and Apply: the segmentation runs in the background and its "
            "segments appear in the input's study, in the chosen segmentation node or (none chosen) the one "
            "made for this input last time, else a new one. A segmentation that holds another volume's "
            "result is never written into. Train and "
            "fine-tune your own models in the <b>SAR Pretrain</b> module. "
            "<p><b>Interactive</b>: choose a promptable model (the built-in lesion-click: one volume, any "
            "modality) and a volume, Start, then click inside the lesion (and outside it to correct, or draw a "
            "box): the lesion segment updates after each change. Undo takes back the last change, Accept keeps "
            "the lesion as a segment, Add to training set makes it a case for fine-tuning in SAR Pretrain. "
            "<b>Try on sample data</b> loads Slicer's MRBrainTumor1 (T1 post-contrast head MR, not "
            "skull-stripped): lesion-click (one volume, any modality) runs on it from a click inside the tumor; glioma-mr4 needs four "
            "skull-stripped channels and cannot run on it.</p>"
            f'See the <a href="{about.HOMEPAGE}">documentation</a>.'
            + REQUIREMENTS
        )
        self.parent.acknowledgementText = about.ACKNOWLEDGEMENT


#
# SARSegmentationParameterNode
#


@parameterNodeWrapper
class SARSegmentationParameterNode:
    """The module's settings, saved with the scene.

    modelName: folder name of the chosen model. roi: optional region to segment. outputSegmentation:
    where the segments go (None: the one made last time for the input, else a new one; a node holding
    another volume's result is refused). It is only ever set by the user. device: auto | GPU | CPU.
    tta: test-time augmentation. Interactive section: interactiveModel (a promptable model's name),
    interactiveVolume, and the markups read as prompts: positivePoints, negativePoints, promptBox.
    """

    modelName: str
    roi: vtkMRMLMarkupsROINode
    outputSegmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(DEVICES), Default("auto")]
    tta: bool
    interactiveModel: str
    interactiveVolume: vtkMRMLScalarVolumeNode
    positivePoints: vtkMRMLMarkupsFiducialNode
    negativePoints: vtkMRMLMarkupsFiducialNode
    promptBox: vtkMRMLMarkupsROINode


#
# SARSegmentationWidget
#


class SARSegmentationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: shows and edits the parameter node, starts and follows jobs. No computation here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._models = None
        self._inputs = None
        self._job = None
        self._interactiveModels = None
        self._promptNodes = []
        self._debounce = None
        self._answers = None
        self._shownMessage = ""

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SARSegmentation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = SARSegmentationLogic()
        self._models = ModelChooser(self.ui.modelComboBox, self.logic.segmentationModels, self.logic.model, "modelName")
        self._inputs = ChannelSelectors(self.ui.inputVolumesFrame.layout(), self._updateButtons,
                                        "Input channel {number} of the model: the {name} volume.")
        view = JobView(self.ui.statusLabel, self.ui.progressBar, self.ui.logTextEdit, hide_when_idle=True)
        self._job = JobFollower(view, self.logic.jobStatus, self.logic.jobLogReader, self.onJobEnded)
        view.idle()
        self.ui.dataFolderButton.directory = str(sar_home())
        self.ui.modelsFolderLabel.text = folders_text()
        self.ui.keepJobsSpinBox.value = kept_jobs()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.refreshModelsButton.connect("clicked()", self.refreshModels)
        self.ui.importModelButton.connect("clicked()", self.onImportModel)
        self.ui.openModelsFolderButton.connect("clicked()", self.onOpenModelsFolder)
        self.ui.dataFolderButton.connect("directoryChanged(QString)", self.onDataFolderChanged)
        self.ui.keepJobsSpinBox.connect("valueChanged(int)", self.onKeepJobsChanged)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.ui.cancelButton.connect("clicked()", self.onCancel)
        self._setupInteractive()

        self.initializeParameterNode()
        self.refreshModels()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.stop()
        for timer in (self._debounce, self._answers):
            if timer is not None:
                timer.stop()
        if self.logic is not None:
            self.logic.endInteractive()
        self.removeObservers()
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshModels()  # e.g. a fine-tuning job finished meanwhile

    def exit(self) -> None:
        # the job follower keeps going: the result is loaded even when another module is shown
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.sceneClosing()  # a running job's result is not loaded into the next scene
        self._forgetPromptNodes()  # the interactive session ends by itself (its logic observes the scene)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self.onModelChanged()

    # parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[SARSegmentationParameterNode]) -> None:
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

    # models and inputs
    def refreshModels(self) -> None:
        self._models.fill(self._parameterNode)
        self._interactiveModels.fill(self._parameterNode)
        self.onModelChanged()

    def onModelChanged(self, index=None) -> None:
        model = self._models.remember(self._parameterNode)
        self._inputs.rebuild(model.modalities if model else [])  # volumes matched by name, not scene order
        self.ui.modelInfoLabel.text = self.logic.modelText(model)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        if self._job is None:  # not set up yet
            return
        running = self._job.job_id is not None
        ready = self._inputs.complete
        self.ui.applyButton.enabled = ready and not running and self._parameterNode is not None
        if running:
            self.ui.applyButton.toolTip = "A segmentation is running."
        elif not self._inputs.selectors:
            self.ui.applyButton.toolTip = "Choose a model first."
        elif not ready:
            self.ui.applyButton.toolTip = "Select one volume for each model channel."
        else:
            self.ui.applyButton.toolTip = "Segment in the background; Slicer stays usable meanwhile."
        self.ui.cancelButton.enabled = running and not self.logic.cancelling(self._job.job_id)
        self.ui.dataFolderButton.enabled = not running  # the running job's result belongs to this folder's logic
        self._updateInteractive()

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import a SAR model", "",
                                              "Zipped SAR model (*.zip)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Failed to import the model.", waitCursor=True):
            model = self.logic.importModel(path)
            if self._parameterNode:
                self._parameterNode.modelName = model.name
            self.refreshModels()
            self._job.view.message(f"Imported model {model.name}.")

    def onDataFolderChanged(self, path) -> None:
        """The user chose another SAR folder: models, jobs and exported inputs are there from now on."""
        if Path(path) == sar_home():
            return
        with slicer.util.tryWithErrorDisplay("Cannot use this folder for SAR."):
            self.logic.setDataFolder(path)
            self._job.view.message(f"SAR keeps its models and jobs in {sar_home()} now.")
        self.ui.dataFolderButton.directory = str(sar_home())  # the folder in use, also when refused
        self.ui.modelsFolderLabel.text = folders_text()
        self.refreshModels()

    def onKeepJobsChanged(self, count) -> None:
        with slicer.util.tryWithErrorDisplay("Cannot change the number of finished jobs kept."):
            set_kept_jobs(qt.QSettings(), int(count))

    def onOpenModelsFolder(self) -> None:
        root = self.logic.modelsFolder()
        root.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(root)))

    # running
    def onApply(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to start the segmentation.", waitCursor=True):
            if not dependencies.ensure_dependencies():
                return
            parameters = self._parameterNode
            warnings = self.logic.inputWarnings(parameters.modelName, self._inputs.nodes())
            if warnings and not slicer.util.confirmOkCancelDisplay(
                    "The input does not look like what this model was trained on:\n- " + "\n- ".join(warnings)
                    + "\n\nThe result may be wrong. Segment anyway?", windowTitle="SAR Segmentation"):
                return
            run = self.logic.startSegmentation(
                parameters.modelName, self._inputs.nodes(), device=parameters.device, roiNode=parameters.roi,
                segmentationNode=parameters.outputSegmentation, tta=parameters.tta)
            self._job.follow(run.job_id)
        self._updateButtons()

    def onCancel(self) -> None:
        jobId = self._job.job_id
        if jobId is None:
            return
        with slicer.util.tryWithErrorDisplay("Failed to cancel the segmentation."):
            self.logic.cancelJob(jobId)
            self._job.view.message("Cancelling...")
        self._updateButtons()

    def onJobEnded(self, jobId, status) -> None:
        """The followed job ended (status None: it could no longer be read): load its result and show how
        it went. The output selector is left as the user set it (the next input gets its own node)."""
        outcome = self.logic.jobOutcome(jobId, status)
        outcome.show(self._job.view.message, slicer.util.errorDisplay, slicer.util.warningDisplay)
        self._updateButtons()


    # interactive
    def _setupInteractive(self) -> None:
        self._interactiveModels = ModelChooser(self.ui.interactiveModelComboBox, self.logic.promptableModels,
                                               self.logic.model, "interactiveModel", default=LESION_CLICK)
        self._debounce = qt.QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.connect("timeout()", self.onPromptsChanged)
        self._answers = new_timer(self.onAnswerTick, 50)
        many, one = (slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups,
                     slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup)
        self.ui.positivePlaceWidget.placeMultipleMarkups = many
        self.ui.negativePlaceWidget.placeMultipleMarkups = many
        self.ui.boxPlaceWidget.placeMultipleMarkups = one
        self.ui.interactiveModelComboBox.connect("currentIndexChanged(int)", self.onInteractiveModelChanged)
        self.ui.startInteractiveButton.connect("clicked()", self.onStartInteractive)
        self.ui.sampleDataButton.connect("clicked()", self.onSampleData)
        self.ui.undoButton.connect("clicked()", lambda: self._interactiveCall("undo"))
        self.ui.acceptButton.connect("clicked()", lambda: self._interactiveCall("accept"))
        self.ui.resetButton.connect("clicked()", lambda: self._interactiveCall("reset"))
        self.ui.addToTrainingButton.connect("clicked()", lambda: self._interactiveCall("add_to_training_set"))

    def onInteractiveModelChanged(self, index=None) -> None:
        self._interactiveModels.remember(self._parameterNode)
        self._updateInteractive()

    def onStartInteractive(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to start the interactive session.", waitCursor=True):
            if not dependencies.ensure_dependencies():
                return
            model = self._interactiveModels.required()
            self.logic.interactive.set_markups(*self._usePromptNodes())
            self.ui.interactiveStatusLabel.text = self.logic.interactive.start(model.name,
                                                                               self._parameterNode.interactiveVolume)
            self._debounce.start()  # points already placed are the first prompts
        self._updateInteractive()

    def _usePromptNodes(self) -> list:
        """The markups read as prompts (made when the parameter node has none), shown in the place widgets and
        observed: each change restarts the debounce timer."""
        self._forgetPromptNodes()
        widgets = (self.ui.positivePlaceWidget, self.ui.negativePlaceWidget, self.ui.boxPlaceWidget)
        self._promptNodes = []
        for (parameter, className, name, color), widget in zip(PROMPT_NODES, widgets):
            node = getattr(self._parameterNode, parameter)
            if node is None:
                node = slicer.mrmlScene.AddNewNodeByClass(className, name)
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(*color)
                setattr(self._parameterNode, parameter, node)
            widget.setCurrentNode(node)
            for event in MARKUP_EVENTS:
                self.addObserver(node, event, self.onMarkupsModified)
            self._promptNodes.append(node)
        return self._promptNodes

    def _forgetPromptNodes(self) -> None:
        for node in self._promptNodes:
            for event in MARKUP_EVENTS:
                self.removeObserver(node, event, self.onMarkupsModified)
        self._promptNodes = []

    def onMarkupsModified(self, caller=None, event=None) -> None:
        if self.logic.interactiveActive():
            self._debounce.start()  # restarted by every change: one request once the user pauses

    def onPromptsChanged(self) -> None:
        if not self.logic.interactiveActive():
            return
        try:
            self.logic.interactive.update()
        except SARLogicError as exc:  # e.g. a point outside the volume: said, nothing asked
            self.ui.interactiveStatusLabel.text = f"Nothing sent: {exc}."
        self._followAnswers()

    def _interactiveCall(self, action: str) -> None:
        with slicer.util.tryWithErrorDisplay(f"Interactive segmentation: {action.replace('_', ' ')} failed."):
            getattr(self.logic.interactive, action)()
        self._followAnswers()

    def _followAnswers(self) -> None:
        if self.logic.interactiveActive() and self.logic.interactive.busy:
            self._answers.start()
        self._updateInteractive()

    def onAnswerTick(self) -> None:
        interactive = self.logic.interactive
        interactive.poll()
        if not interactive.busy or not interactive.active:
            self._answers.stop()
        self._updateInteractive()

    def onSampleData(self) -> None:
        with slicer.util.tryWithErrorDisplay(f"Failed to load the sample {SAMPLE}.", waitCursor=True):
            import SampleData

            volume = SampleData.downloadSample(SAMPLE)
            if self._parameterNode is not None:
                self._parameterNode.interactiveVolume = volume
            self.ui.interactiveStatusLabel.text = SAMPLE_HINT

    def _updateInteractive(self) -> None:
        if self._interactiveModels is None:  # not set up yet
            return
        parameters = self._parameterNode
        if parameters is not None and self.logic.interactiveActive():
            model = self._interactiveModels.selected()
            self.logic.interactive.follow(model.name if model else "", parameters.interactiveVolume)
        active = self.logic.interactiveActive()
        self.ui.startInteractiveButton.enabled = (parameters is not None and parameters.interactiveVolume is not None
                                                  and self._interactiveModels.selected() is not None)
        self.ui.startInteractiveButton.text = "Restart" if active else "Start"
        interactive = self.logic.interactive if active else None  # enabled when they would do something
        self.ui.undoButton.enabled = active and interactive.can_undo
        self.ui.acceptButton.enabled = active and interactive.can_accept
        self.ui.resetButton.enabled = active
        self.ui.addToTrainingButton.enabled = active and interactive.training is not None and interactive.can_add
        message = self.logic.interactiveMessage()
        if message != self._shownMessage:  # the logic's news; what the widget said itself stays until then
            self._shownMessage = self.ui.interactiveStatusLabel.text = message
        elif not active and self._interactiveModels.selected() is None:
            self.ui.interactiveStatusLabel.text = (f"No promptable model yet: the built-in {LESION_CLICK} is installed "
                                                   "with the extension; models you fine-tune from it appear here too.")


#
# SARSegmentationLogic
#


class SARSegmentationLogic(ScriptedLoadableModuleLogic):
    """Wires ``SARSegmentationLib`` to Slicer: the scene, the models folder, the jobs folder; what the
    widget asks for goes through the methods here.

    Usable without the widget (scripts, the self-test); ``runner``, ``models`` and ``scene`` may be
    given (tests), else Slicer's defaults are used. The engine is imported on first use.
    """

    def __init__(self, runner=None, models=None, scene=None) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        if runner is None and models is None:  # given ones (the self-test's workspace) keep their own folders
            apply_settings(qt.QSettings())  # the SAR folder the user chose (and how many finished jobs are kept)
        self.models = models if models is not None else FolderModelStore(models_root())
        self._runner = runner
        self._scene = scene
        self._segmentation = None
        self._interactive = None

    def getParameterNode(self):
        return SARSegmentationParameterNode(super().getParameterNode())

    @property
    def segmentation(self) -> SegmentationLogic:
        """The Lib's segmentation logic, made on first use (it needs the engine)."""
        if self._segmentation is None:
            dependencies.require_engine()
            runner = self._runner if self._runner is not None else default_runner()
            canceller = SubprocessCanceller(runner.root, getattr(runner, "python", None))
            self._segmentation = SegmentationLogic(runner, self.models,
                                                   MRMLSceneAdapter(self._scene or slicer.mrmlScene),
                                                   work_root() / "segment", canceller=canceller)
        return self._segmentation

    # models
    def modelsFolder(self) -> Path:
        return self.models.root

    def setDataFolder(self, folder) -> Path:
        """Keep models, jobs and exported inputs in ``folder`` from now on (kept in Slicer's settings): the
        models listed and the jobs started afterwards are there; running jobs stay where they are."""
        path = set_data_folder(qt.QSettings(), folder)
        self.models = FolderModelStore(models_root())
        self._segmentation = None
        self.endInteractive()
        self._interactive = None
        return path

    def segmentationModels(self) -> list:
        """The fixed (non-promptable) segmentation models: a promptable one needs clicks to run."""
        return [m for m in self.models.list(("segmentation",)) if not m.card.promptable]

    def promptableModels(self) -> list:
        """The promptable models (they segment the lesion clicked in), for the Interactive section."""
        return [m for m in self.models.list(("segmentation",)) if m.card.promptable]

    def model(self, name):
        return self.models.get(name)

    def importModel(self, path):
        """Unpack a zipped model into the models folder (checked; a taken name gets the next version)."""
        return self.models.import_zip(path)

    @staticmethod
    def modelText(model) -> str:
        """What the module says about the chosen model (None: that there is none yet)."""
        if model is None:
            return "No segmentation model yet: train one in the SAR Pretrain module or import a model zip."
        return model.description

    def inputWarnings(self, modelName, volumeNodes) -> list:
        """Why the volumes do not look like the model's training data (see SegmentationLogic.input_warnings)."""
        return self.segmentation.input_warnings(modelName, volumeNodes)

    # jobs
    def startSegmentation(self, modelName, volumeNodes, device="auto", roiNode=None, segmentationNode=None,
                          tta=False):
        """Submit a background segmentation; returns the run (``run.job_id``). See SegmentationLogic.start."""
        return self.segmentation.start(modelName, volumeNodes, device=device, roi_node=roiNode,
                                       segmentation_node=segmentationNode, tta=tta)

    def jobStatus(self, jobId):
        return self.segmentation.status(jobId)

    def jobLogReader(self, jobId):
        """A reader of the job's log returning only what was written since its previous read."""
        return self.segmentation.log_reader(jobId)

    def cancelJob(self, jobId) -> bool:
        """Ask the job to stop; returns at once (a detached process waits for it)."""
        return self.segmentation.cancel(jobId)

    def cancelling(self, jobId) -> bool:
        if jobId is None or self._segmentation is None:
            return False
        return bool(self._segmentation.canceller.busy(jobId))

    def jobOutcome(self, jobId, status):
        """The job's result loaded, and what to show about its end (see SegmentationLogic.outcome)."""
        return self.segmentation.outcome(jobId, status)

    def sceneClosing(self) -> None:
        """No result of a job started before is loaded after the scene closes (see SegmentationLogic)."""
        if self._segmentation is not None:
            self._segmentation.scene_closed()

    # interactive
    @property
    def interactive(self) -> InteractiveLogic:
        """The Lib's interactive logic, made on first use; accepted cases go to SAR Pretrain's training sets
        (imported here, not in the Lib: SARPretrainLib builds on SARSegmentationLib)."""
        if self._interactive is None:
            scene = MRMLSceneAdapter(self._scene or slicer.mrmlScene)
            try:
                from SARPretrainLib.training import TrainingSetLogic
            except ImportError:  # SAR Pretrain not installed: no training set to add to
                training = None
            else:
                training = TrainingSetLogic(self._runner if self._runner is not None else default_runner(),
                                            self.models, scene)
            self._interactive = InteractiveLogic(self.models, scene, training=training,
                                                 work_folder=work_root() / "interactive")
        return self._interactive

    def interactiveActive(self) -> bool:
        return self._interactive is not None and self._interactive.active

    def interactiveMessage(self) -> str:
        return self._interactive.message if self._interactive is not None else ""

    def endInteractive(self) -> None:
        """Stop the interactive session (its worker shut down), if one runs."""
        if self._interactive is not None:
            self._interactive.stop()

    def segmentAndWait(self, modelName, volumeNodes, timeout=600.0, **kwargs):
        """Segment and wait for the result, keeping the GUI alive (scripts and tests)."""
        run = self.startSegmentation(modelName, volumeNodes, **kwargs)
        return self.segmentation.wait(run.job_id, timeout=timeout, tick=lambda status: slicer.app.processEvents())


#
# SARSegmentationTest
#


class SARSegmentationTest(ScriptedLoadableModuleTest):
    """The whole flow in Slicer on generated volumes: tiny models are pretrained and fine-tuned as
    background jobs (10 steps each, on 24x48x48 volumes), a scene volume is segmented twice and the
    segments are checked. Everything is written into a folder of its own (``selftest_workspace``), removed
    when the test passes; nothing is downloaded (without SAR's Python packages the test is skipped)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SARSegmentation_whole_flow()

    def _waitForJob(self, runner, jobId, timeout=900.0):
        deadline = time.monotonic() + timeout
        while not runner.poll(jobId).finished:
            if time.monotonic() > deadline:
                self.fail(f"job {jobId} did not finish in {timeout:.0f} s:\n{runner.log(jobId)}")
            slicer.app.processEvents()
            time.sleep(0.2)
        job = runner.poll(jobId)
        self.assertEqual(job.state, "done", runner.log(jobId))
        return job

    def test_SARSegmentation_whole_flow(self):
        missing = selftest_missing()
        if missing:
            self.skipTest(missing)

        import numpy as np
        from sarseg import io as sario
        from sarseg import mrml, phantom

        with selftest_workspace("SARSegmentationTest") as (root, models, runner):
            shape = (24, 48, 48)
            images, labels = [], []
            for seed in range(2):
                caseImages, label = phantom.make_case(50 + seed, shape)
                images.append(str(sario.write_image(root / "cases" / f"case{seed}_0000.nii.gz", caseImages["mr"],
                                                    phantom.geometry(shape))))
                labels.append(str(sario.write_image(root / "cases" / f"case{seed}.nii.gz",
                                                    (label > 0).astype(np.int16), phantom.geometry(shape))))

            self.delayDisplay("Pretraining a tiny SAR model on two generated volumes in the background")
            pretrained = root / "models" / "sar-pretrained"
            job = runner.submit("pretrain", ["pretrain", "--data", *(f"mr={image}" for image in images),
                                             "--preset", "tiny", "--steps", "10", "--workers", "0",
                                             "--out", str(pretrained)], "cpu")
            self._waitForJob(runner, job.id)

            self.delayDisplay("Fine-tuning it on the generated cases")
            job = runner.submit("finetune", ["finetune", "--init", str(pretrained), "--images", *images,
                                             "--labels", *labels, "--preset", "tiny", "--steps", "10",
                                             "--label-scheme", "binary", "--modalities", "mr",
                                             "--out", str(root / "models" / "tumor")], "cpu")
            self._waitForJob(runner, job.id)
            self.assertEqual([m.name for m in models.list() if not m.builtin], ["tumor"])

            self.delayDisplay("Segmenting a generated volume (twice)")
            caseImages, label = phantom.make_case(7, shape)
            volume = mrml.add_volume_node(slicer.mrmlScene, caseImages["mr"], "SAR test MR", phantom.geometry(shape))
            logic = SARSegmentationLogic(runner=runner, models=models)
            segmentation = logic.segmentAndWait("tumor", [volume], device="CPU")
            names = [segmentation.GetSegmentation().GetNthSegment(i).GetName()
                     for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
            self.assertEqual(names, ["tumor"])
            again = logic.segmentAndWait("tumor", [volume], device="CPU")
            self.assertIs(again, segmentation)
            self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
            self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), 1)
        self.delayDisplay("Test passed")
