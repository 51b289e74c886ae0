"""How CT-like is MKD's synthetic CT, and does S_syn learn from it? A diagnostic for issue 4.

    python -m benchmarks.translation_quality --steps 600 --lambda-sup-gen 1 0 --threads 1

Trains, on the phantom of ``configs/bench/base.yaml`` (fold 0, seed 0, segmentor LR 2e-3):

1. a *judge*: the target-only baseline segmentor, trained on real CT only;
2. MKD once per ``--lambda-sup-gen`` value (the weight of S_syn's supervised loss in G_at's objective;
   0 makes G_at a plain CycleGAN generator, trained online beside the segmentors).

Every ``--every`` iterations it records, on slice-pooled Dice over 7 structures:

``judge(G_at(x_a))``   the judge on synthetic CT against the assistant labels: the "FCN score" of the
                       CycleGAN paper. High means the synthetic CT looks like real CT *to a CT segmentor*.
``S_syn(G_at(x_a))``   S_syn on the synthetic CT it is trained on.
``S_syn(x_t)``         S_syn on real held-out CT: what MKD's S_syn contributes at test time.

A translator that makes images S_syn reads well but a CT segmentor does not (high second number, low
first) has found a code shared with S_syn instead of CT's appearance. Writes
``benchmarks/results/translation/<name>.json`` and ``samples.png`` (MR, synthetic CT per variant, a real CT).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.reproduce import compose, for_run, load_yaml  # noqa: E402
from mkdseg.cli import build_cli  # noqa: E402
from mkdseg.data.datasets import SliceSet  # noqa: E402

import lightning.pytorch as pl  # noqa: E402


def pooled_dice(prediction: torch.Tensor, label: torch.Tensor) -> float:
    """Mean over foreground classes present in ``label`` of the Dice pooled over all slices."""
    scores = []
    for c in torch.unique(label).tolist():
        if c == 0:
            continue
        p, g = prediction == c, label == c
        if g.any():
            scores.append(2 * (p & g).sum().item() / (p.sum() + g.sum()).item())
    return sum(scores) / len(scores)


@torch.no_grad()
def evaluate(net: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """``net`` over ``images`` in eval mode and in batches; the training mode is restored after."""
    was_training = net.training
    net.eval()
    out = torch.cat([net(images[i : i + batch]) for i in range(0, len(images), batch)])
    net.train(was_training)
    return out


def segment(net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return evaluate(net, images).argmax(1)


def stacked(slices: SliceSet) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(slices[i] for i in range(len(slices))))
    return torch.stack(images), torch.stack(labels)


class TranslationProbe(pl.Callback):
    """Records the three Dice scores of the module docstring every ``every`` iterations."""

    def __init__(self, judge: torch.nn.Module, every: int, assistant: tuple, held_out_target: tuple):
        self.judge, self.every, self.rows = judge, every, []
        (self.x_a, self.y_a), (self.x_t, self.y_t) = assistant, held_out_target

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0:
            self.rows.append(self.measure(pl_module, step))
            print(json.dumps(self.rows[-1]), flush=True)

    def measure(self, module, step: int) -> dict:
        fake_t = evaluate(module.g_at, self.x_a)
        return {
            "iteration": step,
            "judge_on_fake_ct": pooled_dice(segment(self.judge, fake_t), self.y_a),
            "s_syn_on_fake_ct": pooled_dice(segment(module.s_syn, fake_t), self.y_a),
            "s_syn_on_real_ct": pooled_dice(segment(module.s_syn, self.x_t), self.y_t),
        }


def bench_config(config_dir: Path, name: str, steps: int, run_dir: Path, sets: list[tuple[str, object]]) -> Path:
    config = compose(load_yaml(config_dir / "base.yaml"), load_yaml(config_dir / f"{name}.yaml"), sets=sets, steps=steps)
    config = for_run(config, fold=0, seed=0, run_dir=run_dir)
    config["trainer"]["val_check_interval"] = steps  # the probe measures; one validation at the end
    path = run_dir / "config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fit(config: Path, callbacks=()):
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = build_cli(["--config", str(config)], run=False)
    finally:
        sys.argv = argv
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--judge-steps", type=int, default=300)
    parser.add_argument("--lambda-sup-gen", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--lr-seg", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config-dir", type=Path, default=REPO / "configs" / "bench", help="base.yaml, baseline.yaml and mkd.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "translation")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "translation_quality")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    lr = [("model.init_args.lr_seg", args.lr_seg)]

    start = time.perf_counter()
    judge_cli = fit(bench_config(args.config_dir, "baseline", args.judge_steps, args.work / "judge", lr))
    judge = judge_cli.model.seg
    probe_x, probe_y = stacked(SliceSet(judge_cli.datamodule.cache, judge_cli.datamodule.test_records))
    judge_real = pooled_dice(segment(judge, probe_x), probe_y)
    x_a, y_a = stacked(judge_cli.datamodule.assistant_train)
    judge_mr = pooled_dice(segment(judge, x_a), y_a)
    print(f"judge: real held-out CT {judge_real:.3f}, raw MR {judge_mr:.3f}", flush=True)

    samples = {"MR (input)": x_a[:: max(1, len(x_a) // 4)][:4]}
    for weight in args.lambda_sup_gen:
        name = f"mkd_lambda_sup_gen{weight:g}"
        probe = TranslationProbe(judge, args.every, (x_a, y_a), (probe_x, probe_y))
        cli = fit(bench_config(args.config_dir, "mkd", args.steps, args.work / name, lr + [("model.init_args.lambda_sup_gen", weight)]), [probe])
        if not probe.rows or probe.rows[-1]["iteration"] != cli.trainer.global_step:
            probe.rows.append(probe.measure(cli.model, cli.trainer.global_step))
        samples[f"G_at(MR), lambda_sup_gen={weight:g}"] = evaluate(cli.model.g_at, samples["MR (input)"])
        result = {"variant": name, "steps": args.steps, "lr_seg": args.lr_seg, "judge_on_real_ct": judge_real,
                  "judge_on_raw_mr": judge_mr, "curve": probe.rows}
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    samples["real CT"] = probe_x[:: max(1, len(probe_x) // 4)][:4]
    save_samples(samples, args.out / "samples.png")
    print(f"wrote {args.out} in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def save_samples(rows: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(2 * n, 2.1 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[r][0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
