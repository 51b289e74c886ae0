"""Time ``mkdseg preprocess`` per volume of MM-WHS CT size, and extrapolate to the 40 MM-WHS volumes.

    python -m benchmarks.preprocess_speed                    # 2 synthetic 512x512x250 int16 CTs
    python -m benchmarks.preprocess_speed --volumes 4 --shape 512 512 300
    python -m benchmarks.preprocess_speed --volumes 1 --shape 64 64 16 --image-size 32   # a quick check

MM-WHS CTs are 512x512 with 177-363 slices; its MRs are smaller, so 40 x (time of a CT) bounds the
whole training set (20 CT + 20 MR) from above.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic_ct import write_synthetic_chest_ct

from mkdseg.data.convert import convert_main  # noqa: E402
from mkdseg.data.preprocess import preprocess_nnunet  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volumes", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 250))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.4, 0.4, 0.6))
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i in range(args.volumes):
            write_synthetic_chest_ct(src / f"ct_train_{1001 + i}_image.nii.gz", src / f"ct_train_{1001 + i}_label.nii.gz",
                                     tuple(args.shape), tuple(args.spacing), seed=i)
        assert convert_main(["mmwhs", "--src", str(src), "--out", str(Path(tmp) / "ct")]) == 0
        start = time.perf_counter()
        cache = preprocess_nnunet(Path(tmp) / "ct", None, Path(tmp) / "cache", slice_axis=2, image_size=args.image_size, progress=False)
        seconds = time.perf_counter() - start
        slices = sum(r.n_slices for r in cache.volumes())

    per_volume = seconds / args.volumes
    print(f"volumes       {args.volumes} x {tuple(args.shape)} int16 CT + label, spacing {tuple(args.spacing)} mm")
    print(f"settings      image size {args.image_size}, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"time          {seconds:.1f} s in all, {per_volume:.1f} s per volume, {slices} slices cached")
    print(f"40 volumes    ~{40 * per_volume / 60:.1f} min (extrapolated; MM-WHS MRs are smaller than its CTs)")
    print(f"peak RSS      {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
