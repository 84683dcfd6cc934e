"""Logic of the SAR Pretrain module: pretraining, annotate-and-fine-tune, and the jobs panel.

Pure Python, importable without the Slicer application or Qt. It shares the protocols, the model
store, the scene adapter and the job helpers of :mod:`SARSegmentationLib` (installed beside it in the
extension's scripted-modules folder).
"""

from .jobspanel import JobRow, JobsPanelLogic
from .pretraining import PretrainLogic, PretrainSource
from .training import TrainingSetLogic, name_to_value, scheme_for, scheme_from_segments

__all__ = ["JobRow", "JobsPanelLogic", "PretrainLogic", "PretrainSource", "TrainingSetLogic", "name_to_value",
           "scheme_for", "scheme_from_segments"]
