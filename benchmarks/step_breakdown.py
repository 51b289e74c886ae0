"""Where one MKD iteration's CPU time goes, network by network, and whether batching its paired forwards pays.

    OMP_NUM_THREADS=1 python -m benchmarks.step_breakdown --precision bf16 --channels-last --out benchmarks/results/step_breakdown
    python -m benchmarks.step_breakdown --size my_config.yaml --rounds 1 --warmup 0      # a config's sizes, quickly

One iteration of Algorithm 1 (as :mod:`benchmarks.step_cost`'s bare loop runs it) passes one batch through:
G_at and G_ta twice each (the four translations), D_t and D_a three times each (once frozen in the generator
update, twice in their own), S_syn three times (once frozen in the generator update: the λ_sup term; twice in
the segmentor update) and S_real twice. For each network this times forward + backward on one batch, and
two batches run separately against the same two as one concatenated batch (the paired forwards of an
iteration, e.g. S_syn on ``fake_t`` and on ``x_t``, can be batched: with instance norm the result is the same;
the segmentor updates do so since :func:`mkdseg.methods.shared.segment_together`).

The generator update's S_syn forward on ``fake_t`` and the segmentor update's are the same numbers (S_syn does
not change in between); the ``shared S_syn forward`` line is the most sharing them could save.
Timings are interleaved over rounds, medians reported; the machine may be shared, so ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from benchmarks.step_cost import ROOT, load_size  # the demo and paper sizes, as step_cost reads them

from mkdseg.methods import MKDModule  # noqa: E402

#: forward passes of one batch per iteration, by network
USES = {"g_at": 2, "g_ta": 2, "d_t": 3, "d_a": 3, "s_syn": 3, "s_real": 2}


def timed(fn, autocast) -> float:
    with autocast():
        start = time.perf_counter()
        fn()
    return time.perf_counter() - start


def forward_backward(net: torch.nn.Module, *batches: torch.Tensor) -> None:
    sum(net(b).float().mean() for b in batches).backward()


def forward_only(net: torch.nn.Module, batch: torch.Tensor) -> None:
    with torch.no_grad():
        net(batch)


def measure(model: MKDModule, batch: int, size: int, rounds: int, warmup: int, autocast, channels_last: bool) -> dict:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x1, x2 = (torch.randn(batch, 1, size, size).contiguous(memory_format=fmt) for _ in range(2))
    both = torch.cat([x1, x2]).contiguous(memory_format=fmt)
    cases = {}
    for name in USES:
        net = getattr(model, name)
        cases[f"{name}/one"] = lambda net=net: forward_backward(net, x1)
        cases[f"{name}/separate"] = lambda net=net: forward_backward(net, x1, x2)
        cases[f"{name}/batched"] = lambda net=net: forward_backward(net, both)
    cases["s_syn/forward"] = lambda: forward_only(model.s_syn, x1)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(warmup + rounds):
        for key, fn in cases.items():  # interleaved: a neighbour's load hits every case alike
            t = timed(fn, autocast)
            if r >= warmup:
                times[key].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def report(t: dict, command: str, args) -> str:
    per_iter = {n: USES[n] * t[f"{n}/one"] for n in USES}
    total = sum(per_iter.values())
    lines = [
        f"`{command}`", "",
        f"{os.cpu_count()} CPU cores (shared), {torch.get_num_threads()} thread(s), precision {args.precision}, "
        f"channels_last {args.channels_last}, batch {args.batch}, {args.rounds} rounds (medians)", "",
        "| network | forward+backward, one batch (s) | uses / iteration | share of the networks' time | "
        "two batches: separate / batched |",
        "|---|---|---|---|---|",
    ]
    for n in USES:
        lines.append(f"| {n} | {t[f'{n}/one']:.4f} | {USES[n]} | {per_iter[n] / total:.0%} | "
                     f"{t[f'{n}/separate'] / t[f'{n}/batched']:.2f}× |")
    lines += [
        "",
        f"- Networks' forward+backward per iteration: {total:.3f} s (an upper estimate: frozen passes skip the weight gradients).",
        f"- Shared S_syn forward (the most it could save): {t['s_syn/forward']:.4f} s, "
        f"{t['s_syn/forward'] / total:.1%} of that.",
        "- Separate / batched above 1× means batching the pair is faster.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="demo", help="demo, paper, or a config file (step_cost.load_size)")
    parser.add_argument("--batch", type=int, default=None, help="default: the size's config")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="a folder for results.md and results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_args, data = load_size(args.size, args.batch, ROOT / "data_cache", phantom_subjects=4)
    args.batch = data["batch_size"]
    model = MKDModule(**model_args)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    bf16 = args.precision == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    t = measure(model, args.batch, data["image_size"], args.rounds, args.warmup, autocast, args.channels_last)
    command = "python -m " + " ".join([__spec__.name if __spec__ else __name__, *(argv if argv is not None else sys.argv[1:])])
    text = report(t, command, args)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text + "\n")
        (out / "results.json").write_text(json.dumps({"command": command, "seconds": t}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
