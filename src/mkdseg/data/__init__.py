"""Data: the synthetic phantom, public downloads converted to nnU-Net datasets, preprocessing into the slice cache,
datasets and the DataModule."""

from mkdseg.data.cache import SliceCache, VolumeRecord
from mkdseg.data.datamodule import UnpairedSliceDataModule

__all__ = ["SliceCache", "UnpairedSliceDataModule", "VolumeRecord"]
