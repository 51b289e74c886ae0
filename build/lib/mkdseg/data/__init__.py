"""Data: the synthetic phantom, MM-WHS preprocessing, the slice cache, datasets and the DataModule."""

from mkdseg.data.cache import SliceCache, VolumeRecord
from mkdseg.data.datamodule import UnpairedSliceDataModule

__all__ = ["SliceCache", "UnpairedSliceDataModule", "VolumeRecord"]
