"""``mkdseg convert``: the public downloads of BTCV, CHAOS and MM-WHS, as their owners ship them -> nnU-Net v2 raw
datasets (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``; labels 0..N named in
``dataset.json``), ready for ``mkdseg preprocess`` and for nnU-Net itself.

  btcv   --src RawData/Training          CT, 13 organs                        (synapse.org syn3193805)
  chaos  --src Train_Sets/MR             T2-SPIR MR, 4 organs                 (zenodo.org/records/3431873)
  chaos  --src Train_Sets/MR --sequence T1DUAL [--phase in|out]
                                         T1-DUAL MR: in- and out-phase channels, or one
  mmwhs  --src ct_train [--modality mr]  CT or MR, 7 cardiac structures: classes 1..7, the release's codes
                                         205..850 recorded in dataset.json (original_codes)

Every case is converted, or the first problem stops it with one line naming the file (``--skip-incomplete`` leaves
out cases with a part missing and names each). The dataset is written into a temporary folder beside ``--out``,
checked against nnU-Net v2's integrity rules and only then renamed onto ``--out``: it appears complete or not at
all. CHAOS's DICOM needs pydicom (``pip install 'mkdseg[convert]'``).
"""

# As nnU-Net's dataset_conversion/: one module per download (btcv, chaos with dicom, mmwhs; pairs: NIfTI pairs),
# one shared writer (writer), the command line (cli).
from mkdseg.data.convert.cli import build_parser, convert_main

__all__ = ["build_parser", "convert_main"]
