"""Logic of the SAR Segmentation module (and the parts the SAR Pretrain module shares).

Pure Python, importable without the Slicer application or Qt: the engine (``sarseg``), ``slicer`` and
``torch`` are imported only inside the functions that use them. The logic is written against three
small protocols (:mod:`.protocols`) and gets their implementations injected:

* job runner: ``sarseg.core.jobs.JobManager`` (:func:`.jobs.default_runner`),
* model store: :class:`.models.FolderModelStore`,
* scene adapter: :class:`.scene.MRMLSceneAdapter` (wraps ``sarseg.mrml``).
"""

from .jobs import (BackgroundCanceller, JobStatus, SubprocessCanceller, default_runner, format_eta, slicer_python,
                   status_of)
from .interactive import InteractiveLogic
from .models import (FolderModelStore, ModelInfo, cuda_available, jobs_root, models_root, read_model, resolve_device,
                     safe_name, sar_home, split_version, work_root)
from .protocols import JobRunner, ModelStore, SARLogicError, SceneAdapter, TrainingSet
from .scene import MRMLSceneAdapter
from .segmentation import SegmentationLogic, SegmentRun

__all__ = [
    "BackgroundCanceller", "FolderModelStore", "InteractiveLogic", "JobRunner", "JobStatus", "MRMLSceneAdapter",
    "ModelInfo", "ModelStore", "SARLogicError", "SceneAdapter", "SegmentRun", "SegmentationLogic",
    "SubprocessCanceller", "TrainingSet", "cuda_available", "default_runner", "format_eta", "jobs_root", "models_root", "read_model",
    "resolve_device", "safe_name", "sar_home", "slicer_python", "split_version", "status_of", "work_root",
]
