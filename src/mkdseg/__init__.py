"""mkdseg: cross-modality medical image segmentation with online mutual knowledge distillation."""

__version__ = "0.1.0"
