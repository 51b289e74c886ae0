"""Training methods: one LightningModule per method, all evaluated the same way."""

from mkdseg.methods.base import SegmentationMethod, load_method
from mkdseg.methods.baselines import Baseline, FineTune, JointTraining, XShape
from mkdseg.methods.mkd import MKDModule
from mkdseg.methods.mean_teacher import MeanTeacher
from mkdseg.methods.mkd_ablations import MKDNoAlignment
from mkdseg.methods.shared_kernel import SharedKernelKD
from mkdseg.methods.pseudo_label import WeakToStrong
from mkdseg.methods.oracle import MKDOracleTranslation, OfflineOracleTranslation
from mkdseg.methods.translation import OfflineTranslation, OnlineTranslation, OnlineTranslationEnsemble

__all__ = [
    "Baseline", "FineTune", "JointTraining", "MKDModule", "MKDNoAlignment", "MeanTeacher", "MKDOracleTranslation",
    "OfflineOracleTranslation", "OfflineTranslation", "OnlineTranslation", "OnlineTranslationEnsemble",
    "SegmentationMethod", "SharedKernelKD", "WeakToStrong", "XShape", "load_method",
]
