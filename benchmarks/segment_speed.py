"""Wall time and peak memory of ``mkdseg segment`` on one CT of clinical size.

    python -m benchmarks.segment_speed                       # 512x512x300 CT, paper-size MKD segmentors
    python -m benchmarks.segment_speed --precision fp32      # without bfloat16
    python -m benchmarks.segment_speed --ckpt runs/mkd/.../last.ckpt
    python -m benchmarks.segment_speed --config configs/demo.yaml --image-size 128 --field-of-view body   # the cpu preset's model
    python -m benchmarks.segment_speed --shape 64 64 8 --config configs/demo.yaml --image-size 64   # a quick check
    python -m benchmarks.segment_speed --settings plain mirror_lr ensemble2 postprocess save_probabilities   # segment's options

Without ``--ckpt`` the model is an MKDModule with the segmentor sizes of ``configs/mkd.yaml`` (or
``--config``'s) at ``--image-size`` and random weights (generators shrunk: prediction never runs them),
trained (``--field-of-view``) on slices cut to the body (one pass over every slice) or around the structures
(two passes). Random weights call foreground nearly everywhere, so the structures' box of the second
pass is the whole volume: it segments every slice, the worst case. On a shared machine read the CPU time line: wall time there depends
on the neighbours. The synthetic scan is made in a child process (``synthetic_ct.py``) so that the peak resident memory
printed (``getrusage``) is that of segmentation (model, scan, label map) alone.

``--settings`` times ``segment``'s options one after the other on the same scan and model: ``plain`` (the default),
``mirror_lr`` (``--mirror LR``), ``ensemble2`` (two checkpoints: the model and a copy of it), ``postprocess`` (every
structure's largest connected component kept) and ``save_probabilities`` (``--save-probabilities``: a float16
canvas of every class, written compressed). Peak RSS only grows, so each setting's line shows the peak so far:
put ``plain`` first, and a setting that needs more memory shows it as a rise.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from mkdseg import inference
from mkdseg.inference import SlicePredictor, load_segmentor, regions, resolve_precision, segment_file
from mkdseg.labels import FIELDS_OF_VIEW
from mkdseg.mirroring import Mirroring
from mkdseg.data.roi import CANONICAL_PLANES

SETTINGS = ("plain", "mirror_lr", "ensemble2", "postprocess", "save_probabilities")

ROOT = Path(__file__).resolve().parents[1]


def paper_size_model(config: Path = ROOT / "configs" / "mkd.yaml", image_size: int = 256,
                     field_of_view: str = "structures") -> torch.nn.Module:
    from mkdseg.labels import DataSpec
    from mkdseg.methods import MKDModule

    args = yaml.safe_load(config.read_text())["model"]["init_args"] if config.is_file() else {}
    spec = DataSpec.mmwhs().to_dict() | {"field_of_view": field_of_view}
    return MKDModule(image_size=image_size, data_spec=spec, seg_channels=args.get("seg_channels", (64, 128, 256, 512, 512)),
                     seg_strides=args.get("seg_strides", (2, 2, 2, 2)), seg_res_units=args.get("seg_res_units", 2),
                     gen_filters=4, gen_blocks=1, disc_filters=4).eval()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.4, 0.4, 0.6))
    parser.add_argument("--ckpt", type=Path, help="a trained checkpoint instead of random paper-size segmentors")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mkd.yaml",
                        help="without --ckpt: the segmentor sizes (model.init_args) of this config")
    parser.add_argument("--image-size", type=int, default=256, help="without --ckpt: the slice size")
    parser.add_argument("--field-of-view", choices=FIELDS_OF_VIEW, default="body",
                        help="without --ckpt: what the model's training slices showed (default: body, one pass)")
    parser.add_argument("--precision", choices=inference.PRECISION_CHOICES, default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=["plain"],
                        help="segment's options to time, in this order (default: plain)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "ct.nii.gz"
        subprocess.run([sys.executable, str(Path(__file__).with_name("synthetic_ct.py")), str(scan),
                        "--shape", *map(str, args.shape), "--spacing", *map(str, args.spacing)], check=True)
        if args.ckpt:
            model, image_size = load_segmentor(args.ckpt, "cpu")
        else:
            model, image_size = paper_size_model(args.config, args.image_size, args.field_of_view), args.image_size
        precision = resolve_precision(args.precision, "cpu")
        segmentor_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("s_")) / 1e6
        counted = []
        real_predict_box = regions.predict_box

        def counting_predict_box(volume, window, box, z, *rest, **kw):
            counted.append(len(z))
            return real_predict_box(volume, window, box, z, *rest, **kw)

        regions.predict_box = counting_predict_box  # where the two passes look it up
        rss_model = peak_rss_mb()
        timings = {}
        try:
            for setting in args.settings:
                counted.clear()
                predict, options = setting_predictor(setting, model, image_size, precision)
                start, cpu_start = time.perf_counter(), cpu_seconds()
                segment_file(scan, Path(tmp) / f"{setting}.nii.gz", predict, model.spec, batch_size=args.batch_size,
                             progress=False, **options)
                timings[setting] = (time.perf_counter() - start, cpu_seconds() - cpu_start, peak_rss_mb())
                del predict
        finally:
            regions.predict_box = real_predict_box  # main() may run in a process that segments again (the tests)
    seconds, cpu, _ = timings[args.settings[0]]

    print(f"scan          {tuple(args.shape)} int16, spacing {tuple(args.spacing)} mm")
    print(f"model         {type(model).__name__}, segmentors {segmentor_params:.1f} M parameters, slice size {image_size}")
    print(f"settings      precision {precision}, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    if model.spec.field_of_view == "body":
        print(f"slices        one pass over the body's box: {sum(counted)}")
    else:
        print(f"slices        pass 1 (locate): {counted[0]}, pass 2 (structures' box): {sum(counted[1:])}")
    print(f"wall time     {seconds:.1f} s  (read + normalise + {len(counted)} pass(es) + write)")
    # on a shared machine the wall time depends on the neighbours; CPU time over the cores used does not
    print(f"CPU time      {cpu:.1f} s, i.e. {cpu / torch.get_num_threads():.1f} s wall with {torch.get_num_threads()} idle cores")
    print(f"peak RSS      {peak_rss_mb():.0f} MB  (after loading the model: {rss_model:.0f} MB)")
    if len(args.settings) > 1:
        base_cpu = timings[args.settings[0]][1]
        print(f"{'setting':20s} {'wall s':>8s} {'CPU s':>8s} {'x CPU':>6s} {'peak RSS so far MB':>19s}")
        for setting, (wall, cpu_s, rss) in timings.items():
            print(f"{setting:20s} {wall:8.2f} {cpu_s:8.2f} {cpu_s / base_cpu:6.2f} {rss:19.0f}")
    return 0


def setting_predictor(setting: str, model, image_size: int, precision: str) -> tuple[SlicePredictor, dict]:
    """The predictor and ``segment_file`` options of one of :data:`SETTINGS`."""
    spec = model.spec
    if setting == "mirror_lr":
        mirroring = Mirroring.of(CANONICAL_PLANES[spec.slice_axis], ["LR"], spec.structures)
        return SlicePredictor(model, image_size, "cpu", precision, mirroring), {}
    if setting == "ensemble2":
        return SlicePredictor([model, copy.deepcopy(model)], image_size, "cpu", precision), {}
    options = {"postprocess": {"keep_largest": list(range(1, spec.num_classes))},
               "save_probabilities": {"save_probabilities": True}}.get(setting, {})
    return SlicePredictor(model, image_size, "cpu", precision), options


if __name__ == "__main__":
    sys.exit(main())
