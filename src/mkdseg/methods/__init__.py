"""Training methods: one LightningModule per method, all evaluated the same way."""

from mkdseg.methods.base import SegmentationMethod
from mkdseg.methods.loading import load_method
from mkdseg.methods.mean_teacher import MeanTeacher
from mkdseg.methods.mkd import MKDModule
from mkdseg.methods.mkd_no_alignment import MKDNoAlignment
from mkdseg.methods.oracle import MKDOracleTranslation, OfflineOracleTranslation
from mkdseg.methods.pseudo_label import WeakToStrong
from mkdseg.methods.shared_kernel_kd import SharedKernelKD
from mkdseg.methods.supervised import Baseline, FineTune, JointTraining
from mkdseg.methods.translation import OfflineTranslation, OnlineTranslation
from mkdseg.methods.xshape import XShape

__all__ = [
    "Baseline", "FineTune", "JointTraining", "MKDModule", "MKDNoAlignment", "MeanTeacher", "MKDOracleTranslation",
    "OfflineOracleTranslation", "OfflineTranslation", "OnlineTranslation", "SegmentationMethod", "SharedKernelKD",
    "WeakToStrong", "XShape", "load_method",
]
