"""What one MKD training iteration costs, three ways, measured interleaved in one run.

    python -m benchmarks.step_cost                                   # demo and paper size on this machine
    python -m benchmarks.step_cost --sizes paper --device cuda --precision bf16 --channels-last --compile
    python -m benchmarks.step_cost --sizes my_config.yaml --rounds 1 --no-memory     # a config's sizes, quickly

(a) ``lightning``: one iteration of :class:`~mkdseg.methods.MKDModule` through ``Trainer.fit``:
    the time between two consecutive ``on_train_batch_start`` calls, so it includes Lightning's loop,
    logging and data fetching.
(b) ``bare``: the same arithmetic as a plain PyTorch loop, structured as the reference CycleGAN
    iteration is (one forward of the four translations; the generator update with the discriminators
    frozen; the discriminator update on pooled fakes), plus the two segmentor updates: three backward
    passes, the same loss sums, Adam over the same parameters; batches from its own DataLoader.
(c) ``literal``: Algorithm 1 as written, six sequential updates (G_at, G_ta, D_t, D_a, S_syn, S_real),
    each recomputing every forward pass it needs with the networks as they are at that step.

The three run in turn within each round (a, b, c, a, b, c, ...) on separate copies of the same
networks and data, so a neighbour's load on a shared machine hits all three alike; the spread over
rounds is reported as the noise. Peak memory: ``torch.cuda.max_memory_allocated`` per variant on a
GPU; on a CPU, the peak resident memory that one iteration adds, in a fresh process per variant.
The loader line compares how fast the configured DataLoader delivers batches on its own with how
fast the iteration consumes them, and how long the bare loop waited for data.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
import torch
import yaml

from mkdseg.data import UnpairedSliceDataModule
from mkdseg.losses import cycle_loss, distillation_loss, supervised_loss
from mkdseg.methods import MKDModule
from mkdseg.methods.manual import frozen
from mkdseg.methods.pool import ImagePool

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"demo": ROOT / "configs" / "demo.yaml", "paper": ROOT / "configs" / "mkd.yaml"}
VARIANTS = ("lightning", "bare", "literal")


# -- setup -----------------------------------------------------------------------------------------
def load_size(name: str, batch: int | None, cache: Path, phantom_subjects: int) -> tuple[dict, dict]:
    """``(model options, data options)`` of a size: ``demo``, ``paper`` or the path of a config with their
    layout (``model.init_args``, ``data``: an MKD config on the phantom)."""
    config = yaml.safe_load((SIZES[name] if name in SIZES else Path(name)).read_text())
    data = dict(config["data"])
    if data.get("image_size") is None:  # null: the data's own size (the phantom's default), as a run resolves it
        data["image_size"] = UnpairedSliceDataModule(**data).image_size
    model = dict(config["model"]["init_args"], image_size=data["image_size"])
    data.update(
        root=str(cache / f"bench_phantom{data['image_size']}"), phantom_subjects=phantom_subjects,
        batch_size=batch or data["batch_size"], samples_per_epoch=10_000,
    )
    return model, data


def make_data(data: dict) -> UnpairedSliceDataModule:
    dm = UnpairedSliceDataModule(**data)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def loader_iterator(dm: UnpairedSliceDataModule, device: torch.device, channels_last: bool):
    while True:  # a fresh loader each time an epoch runs out
        for batch in dm.train_dataloader():
            yield to_device(batch, device, channels_last)


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if channels_last and v.ndim == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def networks(model: MKDModule) -> dict[str, torch.nn.Module]:
    return {n: getattr(model, n) for n in ("g_at", "g_ta", "d_t", "d_a", "s_syn", "s_real")}


def adam(model: MKDModule, *names: str) -> torch.optim.Adam:
    hp = model.hparams
    lr, betas = (hp.lr_seg, hp.seg_betas) if names[0].startswith("s_") else (hp.lr_gen, hp.gan_betas)
    return torch.optim.Adam([p for n in names for p in getattr(model, n).parameters()], lr=lr, betas=tuple(betas))


# -- (b) the bare loop ---------------------------------------------------------------------------
class BareLoop:
    """One CycleGAN iteration as the reference implementation makes it, plus the segmentor updates."""

    def __init__(self, model: MKDModule, autocast):
        self.m, self.autocast = model, autocast
        self.opt_g, self.opt_d, self.opt_s = adam(model, "g_at", "g_ta"), adam(model, "d_t", "d_a"), adam(model, "s_syn", "s_real")
        self.pool_t, self.pool_a = ImagePool(model.hparams.pool_size), ImagePool(model.hparams.pool_size)

    def step(self, batch: dict) -> None:
        m = self.m
        x_a, y_a, x_t, y_t = batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"]
        with self.autocast():
            fake_t = m.g_at(x_a)
            rec_a = m.g_ta(fake_t)
            fake_a = m.g_ta(x_t)
            rec_t = m.g_at(fake_a)
            with frozen(m.d_t, m.d_a, m.s_syn):  # set_requires_grad([netD_A, netD_B], False)
                loss_g = m.generator_losses(x_a, y_a, x_t, fake_t, rec_a, fake_a, rec_t)["loss_g"]
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        fake_t, fake_a = fake_t.detach(), fake_a.detach()
        with self.autocast():
            loss_d = m.discriminator_losses(x_a, x_t, self.pool_t.query(fake_t), self.pool_a.query(fake_a))["loss_d"]
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        with self.autocast():
            loss_s = m.segmentor_losses(fake_t, y_a, x_t, y_t)["loss_seg"]
        self.opt_s.zero_grad(set_to_none=True)
        loss_s.backward()
        self.opt_s.step()


# -- (c) Algorithm 1, literally -----------------------------------------------------------------
class LiteralAlgorithm:
    """Six sequential updates, each recomputing the forward passes it needs."""

    def __init__(self, model: MKDModule, autocast):
        self.m, self.autocast = model, autocast
        self.opts = {n: adam(model, n) for n in networks(model)}
        self.pool_t, self.pool_a = ImagePool(model.hparams.pool_size), ImagePool(model.hparams.pool_size)

    def _update(self, name: str, loss_fn) -> None:
        others = [net for n, net in networks(self.m).items() if n != name]
        with frozen(*others), self.autocast():
            loss = loss_fn()
        self.opts[name].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[name].step()

    def step(self, batch: dict) -> None:
        m, hp = self.m, self.m.hparams
        x_a, y_a, x_t, y_t = batch["x_a"], batch["y_a"], batch["x_t"], batch["y_t"]

        def g_at_loss():
            fake_t = m.g_at(x_a)
            rec_t = m.g_at(m.g_ta(x_t))
            return (m.gan_loss(m.d_t(fake_t), True) + hp.lambda_cyc * (cycle_loss(m.g_ta(fake_t), x_a) + cycle_loss(rec_t, x_t))
                    + hp.lambda_sup_gen * supervised_loss(m.s_syn(fake_t), y_a))

        def g_ta_loss():
            fake_a = m.g_ta(x_t)
            return m.gan_loss(m.d_a(fake_a), True) + hp.lambda_cyc * (cycle_loss(m.g_ta(m.g_at(x_a)), x_a) + cycle_loss(m.g_at(fake_a), x_t))

        def d_t_loss():
            with torch.no_grad():
                fake_t = self.pool_t.query(m.g_at(x_a))
            return 0.5 * (m.gan_loss(m.d_t(x_t), True) + m.gan_loss(m.d_t(fake_t), False))

        def d_a_loss():
            with torch.no_grad():
                fake_a = self.pool_a.query(m.g_ta(x_t))
            return 0.5 * (m.gan_loss(m.d_a(x_a), True) + m.gan_loss(m.d_a(fake_a), False))

        def s_syn_loss():
            with torch.no_grad():
                fake_t, teacher = m.g_at(x_a), m.s_real(x_t)
            return supervised_loss(m.s_syn(fake_t), y_a) + hp.lambda_kd_syn * distillation_loss(teacher, m.s_syn(x_t), hp.kd_temperature)

        def s_real_loss():
            with torch.no_grad():
                fake_t = m.g_at(x_a)
                teacher = m.s_syn(fake_t)
            return supervised_loss(m.s_real(x_t), y_t) + hp.lambda_kd_real * distillation_loss(teacher, m.s_real(fake_t), hp.kd_temperature)

        for name, fn in (("g_at", g_at_loss), ("g_ta", g_ta_loss), ("d_t", d_t_loss), ("d_a", d_a_loss),
                         ("s_syn", s_syn_loss), ("s_real", s_real_loss)):
            self._update(name, fn)


# -- measuring -----------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or resident memory above the level at its start."""

    def __init__(self, device: torch.device):
        self.device = device
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    @contextmanager
    def measure(self, out: list):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            yield
            torch.cuda.synchronize()
            out.append(torch.cuda.max_memory_allocated())
            return
        start, peak, running = self._rss(), [0], [True]

        def sample():
            while running[0]:
                peak[0] = max(peak[0], self._rss())
                time.sleep(0.001)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            running[0] = False
            thread.join()
            out.append(max(peak[0], self._rss()) - start)


class NoMemory:
    @contextmanager
    def measure(self, out: list):
        yield


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Interleave(L.Callback):
    """Drives the rounds: after each Lightning iteration, one bare and one literal iteration."""

    def __init__(self, others: dict, device: torch.device, memory: PeakMemory, warmup: int, rounds: int):
        self.others, self.device, self.memory, self.warmup, self.rounds = others, device, memory, warmup, rounds
        self.times = {v: [] for v in VARIANTS}
        self.peaks = {v: [] for v in VARIANTS}
        self.data_wait: list[float] = []
        self._start: float | None = None
        self._excluded = 0.0
        self._round = 0
        self._mem = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sync(self.device)
        now = time.perf_counter()
        if self._start is not None and self._round > self.warmup:
            self.times["lightning"].append(now - self._start - self._excluded)
        self._start, self._excluded = now, 0.0
        self._mem = self.memory.measure(self.peaks["lightning"] if self._round >= self.warmup else [])
        self._mem.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._mem.__exit__(None, None, None)
        begin = time.perf_counter()
        keep = self.warmup <= self._round < self.warmup + self.rounds
        for variant, (loop, batches) in self.others.items():
            sync(self.device)
            t0 = time.perf_counter()
            data = next(batches)
            waited = time.perf_counter() - t0
            with self.memory.measure(self.peaks[variant] if keep else []):
                loop.step(data)
            sync(self.device)
            if keep:
                self.times[variant].append(time.perf_counter() - t0)
                if variant == "bare":
                    self.data_wait.append(waited)
        self._excluded = time.perf_counter() - begin
        self._round += 1


def cpu_peak_memory(name: str, variant: str, args) -> float:
    """Peak resident memory that one iteration of ``variant`` adds, measured in a fresh process (so that
    memory the allocator keeps from the other variants does not hide it)."""
    options = ["--sizes", name, "--probe", variant, "--precision", args.precision, "--cache", args.cache,
               "--phantom-subjects", str(args.phantom_subjects)]
    if args.paper_batch:
        options += ["--paper-batch", str(args.paper_batch)]
    if args.threads:
        options += ["--threads", str(args.threads)]
    result = subprocess.run([sys.executable, __file__, *options], capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PEAK ")]
    if result.returncode != 0 or not lines:
        print(f"memory probe {name}/{variant} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return float("nan")
    return float(lines[-1].split()[1])


def _trim() -> None:
    """Give freed heap back to the system, so that resident memory then grows with what is allocated."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def probe(name: str, variant: str, args) -> None:
    """In a child process: build everything, run one iteration of ``variant`` (Adam's state included)
    and print the peak of resident memory above its level just before, sampled every millisecond."""
    batch = args.paper_batch if name == "paper" else None
    model_args, data_args = load_size(name, batch, Path(args.cache), args.phantom_subjects)
    model, dm = MKDModule(**model_args), make_data(data_args)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext
    peaks: list[int] = []
    memory = PeakMemory(torch.device("cpu"))
    if variant == "lightning":
        class Measure(L.Callback):
            def on_train_batch_start(self, *_):
                _trim()
                self.block = memory.measure(peaks)
                self.block.__enter__()

            def on_train_batch_end(self, *_):
                self.block.__exit__(None, None, None)

        with tempfile.TemporaryDirectory() as logs:
            L.Trainer(accelerator="cpu", devices=1, max_steps=1, limit_val_batches=0, logger=CSVLogger(logs),
                      precision="bf16-mixed" if args.precision == "bf16" else "32-true", enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[Measure()]).fit(model, datamodule=dm)
    else:
        loop = (BareLoop if variant == "bare" else LiteralAlgorithm)(model, autocast)
        batch = next(loader_iterator(dm, torch.device("cpu"), False))
        _trim()
        with memory.measure(peaks):
            loop.step(batch)
    print(f"PEAK {peaks[0]}")


def loader_rate(dm: UnpairedSliceDataModule, batches: int) -> float:
    """Batches per second the configured train loader delivers on its own (after its first batch)."""
    iterator = iter(dm.train_dataloader())
    next(iterator)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - t0)


def run_size(name: str, args, device: torch.device) -> dict:
    batch = args.paper_batch if name == "paper" else None
    model_args, data_args = load_size(name, batch, Path(args.cache), args.phantom_subjects)
    rounds = args.paper_rounds if name == "paper" else args.rounds
    if args.compile:
        model_args["compile"] = True
    L.seed_everything(0, verbose=False)
    model = MKDModule(**model_args)
    dm = make_data(data_args)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else nullcontext
    others = {}
    for variant, cls in (("bare", BareLoop), ("literal", LiteralAlgorithm)):
        if variant not in args.variants:
            continue
        copy_ = copy.deepcopy(model).to(device)
        if args.compile:
            copy_.configure_model()
        others[variant] = (cls(copy_, autocast), loader_iterator(make_data(data_args), device, args.channels_last))
    if args.channels_last:  # (a) gets its batches in channels_last too
        dm.on_after_batch_transfer = lambda batch, dataloader_idx: to_device(batch, device, True)
    memory = PeakMemory(device) if device.type == "cuda" else NoMemory()  # CPU: measured in fresh processes below
    interleave = Interleave(others, device, memory, args.warmup, rounds)
    with tempfile.TemporaryDirectory() as logs:
        trainer = L.Trainer(
            accelerator=device.type if device.type == "cuda" else "cpu", devices=1, max_steps=args.warmup + rounds + 1,
            precision="bf16-mixed" if args.precision == "bf16" else "32-true", limit_val_batches=0,
            logger=CSVLogger(logs), log_every_n_steps=args.log_every, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[interleave],
        )
        trainer.fit(model, datamodule=dm)
    rate = loader_rate(dm, args.loader_batches)
    if device.type == "cpu" and not args.no_memory:
        interleave.peaks = {v: [cpu_peak_memory(name, v, args)] for v in VARIANTS if v == "lightning" or v in others}
    return {
        "name": name, "image_size": data_args["image_size"], "batch": data_args["batch_size"],
        "num_workers": data_args["num_workers"], "rounds": rounds, "times": interleave.times,
        "peaks": interleave.peaks, "data_wait": interleave.data_wait, "loader_rate": rate,
        "params": sum(p.numel() for p in model.parameters()),
    }


# -- report --------------------------------------------------------------------------------------
def spread(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=4)
    return f"{(q[2] - q[0]) / statistics.median(values) * 100:.0f}%"


def report(results: list[dict], command: str, device: str, args) -> str:
    lines = [
        f"Command: `{command}`", "",
        f"Device: {device}; torch {torch.__version__}, lightning {L.__version__}; precision {args.precision}"
        f"{', channels_last' if args.channels_last else ''}{', torch.compile' if args.compile else ''}; "
        f"torch threads {torch.get_num_threads()}.", "",
        "Ratios: *paired* is the median over rounds of a_i / x_i (the two iterations of one round ran next to "
        "each other, so they shared the machine's load); *fastest* is min(a) / min(x), the least disturbed of each.", "",
        "| size | batch | variant | median s/iter | fastest s/iter | IQR / median | peak memory | a/x paired | a/x fastest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["times"]["lightning"]
        for v, t in r["times"].items():
            if not t:
                continue
            peak = max(r["peaks"][v]) / 2**20 if r["peaks"][v] else float("nan")
            letter = "abc"[VARIANTS.index(v)]
            paired = fastest = ""
            if v != "lightning":
                paired = f"a/{letter} = {statistics.median(x / y for x, y in zip(a, t)):.3f}"
                fastest = f"{min(a) / min(t):.3f}"
            lines.append(f"| {r['name']} ({r['image_size']} px) | {r['batch']} | ({letter}) {v} | {statistics.median(t):.4f} | "
                         f"{min(t):.4f} | {spread(t)} | {peak:.0f} MiB | {paired} | {fastest} |")
    lines.append("")
    for r in results:
        med = statistics.median(r["times"]["lightning"])
        wait = statistics.median(r["data_wait"]) if r["data_wait"] else float("nan")
        bare = statistics.median(r["times"]["bare"]) if r["times"]["bare"] else float("nan")
        lines.append(
            f"- {r['name']}: {r['params'] / 1e6:.1f} M parameters, {r['rounds']} interleaved rounds; (a) runs "
            f"{1 / med:.2f} iterations/s = {2 * r['batch'] / med:.1f} images/s (target + assistant slices). "
            f"Loader ({r['num_workers']} workers) alone: {r['loader_rate']:.1f} batches/s = "
            f"{r['loader_rate'] * med:.0f}x what the iteration consumes; "
            f"the bare loop waited {wait * 1000:.1f} ms per batch for data ({wait / bare * 100:.1f}% of its iteration)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="demo,paper", help="comma-separated: demo, paper, or config files (see load_size)")
    parser.add_argument("--variants", default=",".join(VARIANTS[1:]), help="besides lightning: bare, literal")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile every network (model.compile=true)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds at demo size")
    parser.add_argument("--paper-rounds", type=int, default=5, help="timed rounds at paper size")
    parser.add_argument("--paper-batch", type=int, default=None, help="batch at paper size (default: configs/mkd.yaml's)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--log-every", type=int, default=20, help="Lightning's log_every_n_steps in (a)")
    parser.add_argument("--loader-batches", type=int, default=20)
    parser.add_argument("--phantom-subjects", type=int, default=4, help="phantom size for the benchmark data")
    parser.add_argument("--cache", default=str(ROOT / "data_cache"))
    parser.add_argument("--no-memory", action="store_true", help="CPU: skip the peak memory (a fresh process per variant)")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: CPU memory of one variant
    parser.add_argument("--out", default=None, help="also write the report here (e.g. a file to paste into benchmarks/RESULTS.md)")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        probe(args.sizes, args.probe, args)
        return 0
    device = torch.device(args.device)
    described = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, shared)"
    results = []
    for name in args.sizes.split(","):
        print(f"== {name} ==", flush=True)
        results.append(run_size(name, args, device))
        if "," in args.sizes:  # an interim table after each size
            print(report(results[-1:], "", described, args).split("\n", 4)[-1], flush=True)
    command = "python -m " + " ".join([__spec__.name if __spec__ else __name__, *(argv if argv is not None else sys.argv[1:])])
    text = report(results, command, described, args)
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"command": command, "device": described, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
