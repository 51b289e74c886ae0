"""How fast one segmentor training iteration runs on this CPU (or GPU) under each speed setting, against a
plain MONAI loop on the same network: iterations per second, measured interleaved.

    python -m benchmarks.segmentor_speed                                  # the cpu preset's network, 64 and 128 px
    python -m benchmarks.segmentor_speed --sizes 128 --settings fp32 bf16 compile --out benchmarks/results/segmentor_speed
    python -m benchmarks.segmentor_speed --sizes 32 --iterations 2 --rounds 1 --channels 4 8 --strides 2   # smoke

Every setting trains its own copy of the same network (MONAI's residual UNet, the ``cpu`` preset's channels,
instance norm) with CE + Dice (:func:`mkdseg.losses.supervised_loss`) and Adam on batches of random slices
(``--batch`` pairs of a target and an assistant slice, as joint training steps them together):

- ``fp32``: the plain loop, nothing changed (the reference);
- ``bf16``: the forward under ``torch.autocast(dtype=bfloat16)`` (``trainer.precision=bf16-mixed``);
- ``channels_last``: network and batches in channels-last memory format (:mod:`mkdseg.callbacks.memory_format`);
- ``bf16_channels_last``: both;
- ``compile``: ``torch.compile`` of the network (the first iterations, which compile, are not timed).

The settings take turns within each round (a, b, c, a, b, c, ...), so that a neighbour's load hits all alike;
the median over rounds is reported with the spread. Whether the CPU computes bfloat16 natively (AVX512-BF16
or AMX) is printed: without it bf16 is emulated and slower. ``--out`` writes ``results.json`` and
``results.md`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mkdseg.losses import supervised_loss
from mkdseg.nets import ResidualUNet

SETTINGS = ("fp32", "bf16", "channels_last", "bf16_channels_last", "compile")


def native_bf16(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Trainer:
    """One setting: a network, its optimizer and the step that trains it on a batch."""

    def __init__(self, setting: str, network: torch.nn.Module, device: str):
        self.setting, self.device = setting, torch.device(device)
        self.channels_last = "channels_last" in setting
        self.network = network.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=2e-3)
        self.forward = torch.compile(self.network) if setting == "compile" else self.network

    def autocast(self):
        if "bf16" in self.setting:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.forward(x)
        loss = supervised_loss(logits, y)
        loss.backward()
        self.optimizer.step()
        return float(loss)


def measure(size: int, settings: list[str], args) -> dict[str, dict]:
    """Iterations per second of each setting at ``size`` px: median and spread over ``args.rounds`` rounds."""
    torch.manual_seed(0)
    template = ResidualUNet(num_classes=args.classes, channels=args.channels, strides=args.strides, num_res_units=1)
    trainers = {}
    for setting in settings:
        network = type(template)(num_classes=args.classes, channels=args.channels, strides=args.strides, num_res_units=1)
        network.load_state_dict(template.state_dict())
        trainers[setting] = Trainer(setting, network, args.device)
    x = torch.randn(2 * args.batch, 1, size, size, device=args.device).clamp_(-1, 1)
    y = torch.randint(0, args.classes, (2 * args.batch, size, size), device=args.device)
    for trainer in trainers.values():  # warm-up: allocations, oneDNN primitives, compilation
        for _ in range(args.warmup):
            trainer.step(x, y)
    rates: dict[str, list[float]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting, trainer in trainers.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.iterations):
                trainer.step(x, y)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[setting].append(args.iterations / (time.perf_counter() - start))
    reference = statistics.median(rates[settings[0]])
    return {s: {"it_per_s": statistics.median(r), "min": min(r), "max": max(r),
                "vs_" + settings[0]: statistics.median(r) / reference} for s, r in rates.items()}


def markdown(results: dict, args, bf16: bool) -> str:
    lines = [f"# Segmentor training iterations per second ({args.device})", "",
             f"`python -m benchmarks.segmentor_speed {' '.join(args.argv)}`", "",
             f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}; "
             f"native bfloat16: {'yes' if bf16 else 'no (emulated)'}; network channels {args.channels}, batch "
             f"{args.batch} + {args.batch} slices, {args.rounds} rounds of {args.iterations} iterations.", "",
             "| px | setting | it/s (median) | min–max | × " + args.settings[0] + " |", "|---|---|---|---|---|"]
    for size, rows in results.items():
        for setting, r in rows.items():
            lines.append(f"| {size} | {setting} | {r['it_per_s']:.2f} | {r['min']:.2f}–{r['max']:.2f} | "
                         f"{r['vs_' + args.settings[0]]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="slice sizes in px")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                        help="the first is the reference (default: all, fp32 first)")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128], help="UNet channels (cpu preset)")
    parser.add_argument("--strides", type=int, nargs="+", default=[2, 2, 2], help="UNet strides (cpu preset)")
    parser.add_argument("--classes", type=int, default=5, help="classes incl. background (the abdomen's 4 organs + 1)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per batch (the cpu preset's data.batch_size)")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations per setting and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (compare trains with 1 per run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    torch.set_num_threads(args.threads)
    bf16 = native_bf16(args.device)
    results = {size: measure(size, args.settings, args) for size in args.sizes}
    text = markdown(results, args, bf16)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"native_bf16": bf16, "results": results}, indent=1))
        (args.out / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
