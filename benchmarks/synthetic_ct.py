"""A synthetic chest CT of MM-WHS size, for timing preprocessing and segmentation (not for accuracy).

int16 Hounsfield units: air -1000 outside an elliptical body (40 HU), two lungs (-800), a spine
(700) and an ellipsoidal heart (blood 350 HU inside a 120 HU myocardium, aorta above it); the label
uses the seven MM-WHS codes. Built slice by slice so that making it needs little memory.

    python -m benchmarks.synthetic_ct ct.nii.gz [--label ct_label.nii.gz] [--shape 512 512 250] [--spacing 0.4 0.4 0.6]

(what ``segment_speed.py`` runs in a child process: it imports neither torch nor mkdseg's networks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from mkdseg.labels import MMWHS

CODE = dict(MMWHS)  # structure name -> MM-WHS code


def synthetic_chest_ct(shape=(512, 512, 250), spacing=(0.4, 0.4, 0.6), seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image int16 [X, Y, Z], label int16 MM-WHS codes, affine 4x4)`` in RAS."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = (np.arange(nx) - nx / 2) * spacing[0]
    y = (np.arange(ny) - ny / 2) * spacing[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    fov = min(nx * spacing[0], ny * spacing[1]) / 2
    body = (xx / (0.9 * fov)) ** 2 + (yy / (0.7 * fov)) ** 2 < 1
    lungs = ((np.abs(xx) - 0.4 * fov) / (0.3 * fov)) ** 2 + (yy / (0.45 * fov)) ** 2 < 1
    spine = (xx / (0.08 * fov)) ** 2 + ((yy + 0.5 * fov) / (0.08 * fov)) ** 2 < 1
    image = np.empty(shape, np.int16)
    label = np.zeros(shape, np.int16)
    heart_r = 0.35 * fov
    z_mm = (np.arange(nz) - nz / 2) * spacing[2]
    for k, z in enumerate(z_mm):
        slab = np.where(body, 40.0, -1000.0)
        slab[lungs & body] = -800
        slab[spine] = 700
        codes = np.zeros((nx, ny), np.int16)
        r = np.sqrt(((xx + 0.1 * fov) / heart_r) ** 2 + ((yy - 0.1 * fov) / (0.8 * heart_r)) ** 2 + (z / (1.1 * heart_r)) ** 2)
        codes[r < 1] = CODE["MYO"]
        chambers = r < 0.8
        codes[chambers & (xx < -0.1 * fov) & (yy >= 0.1 * fov)] = CODE["RV"]
        codes[chambers & (xx < -0.1 * fov) & (yy < 0.1 * fov)] = CODE["RA"]
        codes[chambers & (xx >= -0.1 * fov) & (yy >= 0.1 * fov)] = CODE["LV"]
        codes[chambers & (xx >= -0.1 * fov) & (yy < 0.1 * fov)] = CODE["LA"]
        if z > 0.6 * heart_r:
            codes[((xx / (0.1 * fov)) ** 2 + ((yy - 0.1 * fov) / (0.1 * fov)) ** 2) < 1] = CODE["AA"]
            codes[(((xx + 0.2 * fov) / (0.08 * fov)) ** 2 + ((yy - 0.2 * fov) / (0.08 * fov)) ** 2) < 1] = CODE["PA"]
        slab[codes == CODE["MYO"]] = 120
        slab[(codes > 0) & (codes != CODE["MYO"])] = 350
        slab += rng.normal(0, 15, slab.shape)
        image[:, :, k] = np.clip(np.rint(slab), -1024, 3071)
        label[:, :, k] = codes
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = -np.asarray(spacing) * np.asarray(shape) / 2
    return image, label, affine


def write_synthetic_chest_ct(image_path: Path, label_path: Path | None = None, shape=(512, 512, 250),
                             spacing=(0.4, 0.4, 0.6), seed: int = 0) -> None:
    image, label, affine = synthetic_chest_ct(shape, spacing, seed)
    nib.save(nib.Nifti1Image(image, affine), image_path)
    if label_path is not None:
        nib.save(nib.Nifti1Image(label, affine), label_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path, help="the CT to write (.nii or .nii.gz)")
    parser.add_argument("--label", type=Path, help="also write its MM-WHS label map here")
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 250))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.4, 0.4, 0.6))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_synthetic_chest_ct(args.image, args.label, tuple(args.shape), tuple(args.spacing), args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
