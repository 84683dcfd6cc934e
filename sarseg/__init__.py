"""SAR engine: Scale-Aware Restoration pretraining and tumor segmentation for 3D Slicer and the command line."""

__version__ = "0.1.0"
