"""Training methods: one LightningModule per method, all evaluated the same way."""

from mkdseg.methods.base import SegmentationMethod, load_method
from mkdseg.methods.mkd import MKDModule

__all__ = ["MKDModule", "SegmentationMethod", "load_method"]
