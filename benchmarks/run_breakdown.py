"""Where a training run's CPU time goes, phase by phase, and how close the segmentor step is to this CPU's peak.

    python -m benchmarks.run_breakdown --root data_cache/abdomen128 --steps 250 --out benchmarks/results/run_breakdown
    python -m benchmarks.run_breakdown --render benchmarks/results/run_breakdown/results.json   # its results.md again
    python -m benchmarks.run_breakdown --phantom --image-size 32 --n-target 1 --steps 3 --flop-size 32 --flop-batches 2 \\
        --matmul-size 128 --conv-size 16 --conv-batch 2 --rounds 2 --no-compile --out /tmp/rb   # the test suite's tiny run

**Part 1, the run.** Each setting (``joint``, ``recipe``, ``recipe_no_mix_back``) trains through the product's own
path, :func:`mkdseg.training.fit_and_test` with ``--config cpu --config <method>`` (``mkdseg fit``'s arguments),
``--steps`` iterations with one validation at the last (``--trainer.val_check_interval``), then its test. Process
CPU time (``time.process_time``, one torch thread: what a neighbour's load does not inflate) is attributed to the
innermost open phase, so every second counts once:

* ``data``: the training loader's fetch (Lightning's ``train_dataloader_next``, seen through a pass-through
  profiler the benchmark sets as ``trainer.profiler``) and the datamodule's ``on_after_batch_transfer``
  (batch-level appearance);
* ``gin``: ``random_convolution`` wherever a ``mkdseg`` module looks it up, and the model's ``student_view_of``
  (the mean teacher's student view: GIN + noise);
* ``teacher``: ``pseudo_label`` and the teacher's forward; ``student_fwd``: the segmentor ``seg``'s forwards;
* ``losses`` (supervised and pseudo-label losses), ``mixing`` (copy-paste masks and pastes);
* ``backward``: callback hooks ``on_before_backward`` .. ``on_after_backward``;
* ``optimizer``: ``on_before_optimizer_step`` .. the torch optimizer's step post-hook (Adam's update);
* ``ema``: from there to the return of the model's ``optimizer_step``, for a model with a ``teacher`` network (the
  mean teacher's update);
* ``logging``: ``log``/``log_dict`` and the logger connector's step-metric update (CSV writes);
* ``checkpoint``: ``trainer.save_checkpoint`` outside validation; ``validation``: ``on_validation_start`` ..
  ``on_validation_end`` (all of it, its checkpoint included); ``test``: everything after the fit ends;
  ``setup``: CLI parsing, cache, model and Lightning set-up before the first iteration;
* ``other``: the rest of the training loop (Lightning's loop, the method's glue, zero_grad).

The wrappers are installed by the benchmark on the instances (model, trainer, datamodule), and on the functions
above by name in every ``mkdseg`` module whose globals hold them (no module path of the methods is assumed), and
removed after the run; the product's code is not changed.

**Part 2, FLOP/s.** The cpu preset's segmentor (:class:`mkdseg.nets.ResidualUNet`, sizes from ``cpu.yaml``),
one forward + supervised loss + backward at ``--flop-batches`` (16: the labelled pair of joint training and the
recipe; 32: all the recipe student's slices of one iteration as one batch); FLOPs from
``torch.utils.flop_counter.FlopCounterMode``, CPU time the median of ``--rounds``; against a microbenchmark of
this CPU's peak on one thread: a large fp32 matmul and a large 3x3 convolution (forward, and forward+backward).
With channels_last and ``torch.compile`` as extra rows, a profile of one step by op category and the achieved
GFLOP/s of each convolution layer on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.profilers import PassThroughProfiler

from mkdseg.io import atomic_write_text
from mkdseg.presets import SIZES

CLOCK = time.process_time

#: phase -> what it covers, in the order of the table
PHASES = {
    "data": "data loading + augmentation (loader fetch, batch transfer hook)",
    "gin": "GIN / student view (random convolution + noise)",
    "teacher": "teacher forward (pseudo-labels)",
    "student_fwd": "student segmentor forwards",
    "losses": "losses (supervised, pseudo-label)",
    "mixing": "copy-paste mixing",
    "backward": "backward",
    "optimizer": "optimizer step (Adam)",
    "ema": "EMA update of the teacher",
    "logging": "logging",
    "checkpoint": "checkpoints (outside validation)",
    "other": "other (Lightning loop, glue, zero_grad)",
    "validation": "validation",
    "setup": "setup (CLI, cache, model; before iteration 1)",
    "test": "test (after the fit)",
}
#: phases inside which nothing nested is told apart
OPAQUE = {"validation", "test"}
#: name -> the settings' LightningCLI arguments (after --config cpu)
SETTINGS = {
    "joint": ["--config", "joint"],
    "recipe": ["--config", "recipe"],
    "recipe_no_mix_back": ["--config", "recipe", "--model.init_args.mix_back=false"],
}
FETCH_ACTION = "train_dataloader_next"


class PhaseClock:
    """Exclusive process CPU time by phase: time goes to the innermost open phase (``other`` when none is open);
    inside an opaque phase (validation, test), nested phases count as it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack = ["other"]
        self.last = CLOCK()

    def _charge(self) -> None:
        now = CLOCK()
        self.seconds[self.stack[-1]] += now - self.last
        self.last = now

    @property
    def top(self) -> str:
        return self.stack[-1]

    def push(self, name: str) -> None:
        self._charge()
        if self.top in OPAQUE:
            name = self.top
        elif name != self.top:  # a phase nested in itself (pseudo_label's teacher forward) is one call
            self.calls[name] += 1
        self.stack.append(name)

    def pop(self, name: str | None = None) -> None:
        """Close the innermost phase (``name``: only if it is that one, or one nested in an opaque phase)."""
        if len(self.stack) == 1 or (name is not None and self.top != name and self.top not in OPAQUE):
            return
        self._charge()
        self.stack.pop()

    @contextlib.contextmanager
    def phase(self, name: str):
        self.push(name)
        try:
            yield
        finally:
            self.pop()

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            with self.phase(name):
                return fn(*args, **kwargs)
        wrapped.__wrapped_by_run_breakdown__ = True
        return wrapped

    def close(self) -> dict[str, float]:
        self._charge()
        return dict(self.seconds)


class FetchProfiler(PassThroughProfiler):
    """Lightning's no-op profiler, but the training loader's fetch opens and closes the ``data`` phase."""

    def __init__(self, clock: PhaseClock):
        super().__init__()
        self.clock = clock

    def start(self, action_name: str) -> None:
        if action_name.endswith(FETCH_ACTION):
            self.clock.push("data")

    def stop(self, action_name: str) -> None:
        if action_name.endswith(FETCH_ACTION):
            self.clock.pop("data")


def wrap_attribute(clock: PhaseClock, owner, attribute: str, phase: str) -> bool:
    """``owner.attribute`` (a method or function looked up on the instance) through ``clock``'s phase ``phase``."""
    fn = getattr(owner, attribute, None)
    if fn is None or getattr(fn, "__wrapped_by_run_breakdown__", False):
        return False
    setattr(owner, attribute, clock.wrap(phase, fn))
    return True


#: functions the methods and the data module look up in their modules' globals -> the phase they are; wrapped by
#: name in every ``mkdseg`` module that holds one, so that this does not depend on which module defines or imports them
MODULE_FUNCTIONS = {"random_convolution": "gin", "supervised_loss": "losses", "weighted_segmentation_loss": "losses",
                    "paste": "mixing", "box_masks": "mixing", "class_masks": "mixing"}


class ModulePatches:
    """Installs :data:`MODULE_FUNCTIONS`' wrappers when the fit sets up (every module the run uses is imported by
    then) and restores the originals when the run is over."""

    def __init__(self, clock: PhaseClock):
        self.clock = clock
        self.saved: list[tuple[object, str, object]] = []

    def install(self) -> None:
        for module_name, module in list(sys.modules.items()):
            if module is None or not (module_name == "mkdseg" or module_name.startswith("mkdseg.")):
                continue
            for name, phase in MODULE_FUNCTIONS.items():
                fn = vars(module).get(name)
                if inspect.isfunction(fn) and wrap_attribute(self.clock, module, name, phase):
                    self.saved.append((module, name, fn))

    def restore(self) -> None:
        for module, name, original in reversed(self.saved):
            setattr(module, name, original)
        self.saved.clear()


class PhaseCallback(L.Callback):
    """Installs the instance wrappers at the fit's set-up and marks the phases Lightning's hooks delimit."""

    def __init__(self, clock: PhaseClock, patches: ModulePatches):
        self.clock, self.patches = clock, patches
        self.installed = False
        self.iteration_starts: list[float] = []
        self.train_start = self.train_end = None
        self.num_workers = None
        self.threads = None
        self.ema = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self.installed:
            return
        self.installed = True
        c = self.clock
        self.patches.install()
        trainer.profiler = FetchProfiler(c)
        dm = trainer.datamodule
        wrap_attribute(c, dm, "on_after_batch_transfer", "data")
        self.num_workers = getattr(dm.hparams, "num_workers", None)
        if getattr(pl_module, "seg", None) is not None:
            wrap_attribute(c, pl_module.seg, "forward", "student_fwd")
        if getattr(pl_module, "teacher", None) is not None:
            wrap_attribute(c, pl_module.teacher, "forward", "teacher")
        for attribute, phase in (("pseudo_label", "teacher"), ("student_view_of", "gin"), ("pasted", "mixing"),
                                 ("log", "logging"), ("log_dict", "logging")):
            if hasattr(pl_module, attribute):
                wrap_attribute(c, pl_module, attribute, phase)
        wrap_attribute(c, trainer._logger_connector, "update_train_step_metrics", "logging")
        wrap_attribute(c, trainer, "save_checkpoint", "checkpoint")
        # a method with a teacher network (the mean teacher and the methods built on it) updates it, the EMA, after
        # the optimizer's step and before its optimizer_step returns
        self.ema = getattr(pl_module, "teacher", None) is not None
        if self.ema:
            step = pl_module.optimizer_step

            @functools.wraps(step)
            def optimizer_step(*args, **kwargs):
                try:
                    return step(*args, **kwargs)
                finally:
                    c.pop("ema")

            pl_module.optimizer_step = optimizer_step

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock.pop("setup")
        self.train_start = CLOCK()
        self.threads = torch.get_num_threads()
        for optimizer in trainer.optimizers:
            optimizer.register_step_post_hook(self._after_step)

    def _after_step(self, optimizer, args, kwargs) -> None:
        self.clock.pop("optimizer")
        if self.ema:
            self.clock.push("ema")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.iteration_starts.append(CLOCK())

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.clock.push("backward")

    def on_after_backward(self, trainer, pl_module) -> None:
        self.clock.pop("backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.clock.push("optimizer")

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self.clock.push("validation")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self.clock.pop("validation")

    def on_train_end(self, trainer, pl_module) -> None:
        self.train_end = CLOCK()
        self.iteration_starts.append(self.train_end)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.clock.push("test")  # closed by the benchmark when fit_and_test returns

    def iteration_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.iteration_starts, self.iteration_starts[1:])]


def run_setting(name: str, base: list[str], steps: int, extra: list[str], assd: bool) -> dict:
    """Train setting ``name`` through ``fit_and_test`` and return its phases."""
    from mkdseg.training import fit_and_test

    work = tempfile.mkdtemp(prefix=f"run-breakdown-{name}-")
    args = ["--config", "cpu", *SETTINGS[name], *base, f"--trainer.max_steps={steps}",
            f"--trainer.val_check_interval={steps}", f"--trainer.default_root_dir={work}", *extra]
    L.seed_everything(0, verbose=False)
    clock = PhaseClock()
    patches = ModulePatches(clock)
    callback = PhaseCallback(clock, patches)
    wall = time.perf_counter()
    try:
        clock.push("setup")
        fitted = fit_and_test(args, callbacks=[callback], surface_distances=assd)
        clock.pop("test")
    finally:
        patches.restore()
    wall = time.perf_counter() - wall
    seconds = clock.close()
    total = sum(seconds.values())
    iterations = fitted.cli.trainer.global_step
    per_iteration = callback.iteration_seconds()
    dice = (fitted.test or {}).get("dice", {})
    primary = fitted.cli.model.primary_predictor if hasattr(fitted.cli.model, "primary_predictor") else None
    return {
        "setting": name, "arguments": args, "iterations": iterations, "process_cpu_s": total, "wall_s": wall,
        "fit_cpu_s": fitted.fit_cpu_s, "torch_threads": callback.threads, "data_num_workers": callback.num_workers,
        "validations": clock.calls.get("validation", 0),
        "iteration_cpu_s_median": statistics.median(per_iteration) if per_iteration else None,
        "phases": {p: {"cpu_s": seconds.get(p, 0.0), "per_iteration": seconds.get(p, 0.0) / max(iterations, 1),
                       "share": seconds.get(p, 0.0) / total if total else 0.0, "calls": clock.calls.get(p, 0)}
                   for p in PHASES},
        "test_dice_mean": _mean_dice(dice, primary),
    }


def _mean_dice(dice: dict, primary: str | None) -> float | None:
    """The primary predictor's mean Dice of a test summary (None where it has none)."""
    if not dice:
        return None
    values = dice.get(primary) or next(iter(dice.values()))
    try:
        return float(values["mean"]["mean"])
    except (KeyError, TypeError):
        return None


# -- part 2: FLOP/s ------------------------------------------------------------------------------------------------
def median_cpu(fn, rounds: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times)


def count_flops(fn) -> tuple[int, dict]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), by_op


def peak_rows(matmul_size: int, conv_batch: int, conv_channels: int, conv_size: int, rounds: int) -> list[dict]:
    """This CPU's fp32 GFLOP/s on one thread: a large matmul, a large 3x3 convolution forward and forward+backward."""
    a, b = torch.randn(matmul_size, matmul_size), torch.randn(matmul_size, matmul_size)
    conv = torch.nn.Conv2d(conv_channels, conv_channels, 3, padding=1)
    x = torch.randn(conv_batch, conv_channels, conv_size, conv_size)
    xg = x.clone().requires_grad_(True)
    grad = torch.randn(conv_batch, conv_channels, conv_size, conv_size)

    def conv_forward():
        with torch.no_grad():
            conv(x)

    def conv_step():
        conv.zero_grad(set_to_none=True)
        xg.grad = None
        conv(xg).backward(grad)

    rows = []
    conv_name = f"conv 3x3 {conv_channels}->{conv_channels}, {conv_size}x{conv_size}, batch {conv_batch}"
    for name, fn in ((f"matmul {matmul_size}x{matmul_size} fp32", lambda: a @ b), (f"{conv_name}: forward", conv_forward),
                     (f"{conv_name}: forward+backward", conv_step)):
        flops, _ = count_flops(fn)
        seconds = median_cpu(fn, rounds, warmup=1)
        rows.append({"kernel": name, "gflop": flops / 1e9, "cpu_s": seconds, "gflops": flops / seconds / 1e9})
    return rows


def make_segmentor(num_classes: int) -> torch.nn.Module:
    from mkdseg.nets import ResidualUNet

    init = yaml.safe_load((SIZES / "cpu.yaml").read_text())["model"]["init_args"]
    return ResidualUNet(in_channels=1, num_classes=num_classes, channels=init["seg_channels"], strides=init["seg_strides"],
                        num_res_units=init["seg_res_units"])


def segmentor_step(net, batch: int, size: int, num_classes: int, channels_last: bool = False):
    """One forward + the supervised loss + backward of ``net`` on a random batch (a callable)."""
    from mkdseg.losses import supervised_loss

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=fmt)
    y = torch.randint(num_classes, (batch, size, size))

    def step():
        for p in net.parameters():
            p.grad = None
        supervised_loss(net(x), y).backward()

    return step


CATEGORIES = (("convolution", ("conv",)), ("instance norm", ("norm",)), ("PReLU", ("prelu",)),
              ("loss (softmax, CE, Dice)", ("softmax", "nll", "cross_entropy", "one_hot", "log_", "dice")),
              ("elementwise, copies, reductions", ("add", "mul", "copy", "fill", "zero", "clone", "cat", "sum", "mean",
                                                    "div", "sub", "empty", "to", "view", "expand", "pow", "where",
                                                    "scatter", "gather", "max", "min", "exp", "sqrt", "rsqrt", "clamp")))


def categorise(name: str) -> str:
    lower = name.lower()
    for category, keys in CATEGORIES:
        if any(k in lower for k in keys):
            return category
    return "other (autograd, optimizer glue)"


def profile_step(step, top: int) -> tuple[list[dict], dict[str, float]]:
    """Self CPU time of one step's ops: the ``top`` ops and the sum by category (seconds)."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
            "calls": e.count, "category": categorise(e.key)} for e in events[:top]]
    categories: dict[str, float] = defaultdict(float)
    for e in events:
        categories[categorise(e.key)] += e.self_cpu_time_total / 1e6
    return ops, dict(sorted(categories.items(), key=lambda kv: -kv[1]))


def conv_layers(net, batch: int, size: int, rounds: int) -> list[dict]:
    """Each convolution of ``net`` alone: forward + backward at the input it sees in the step, its GFLOP/s."""
    shapes = []
    convs = [(name, m) for name, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: shapes.append((name, m, tuple(i[0].shape), i[0].requires_grad)))
             for name, m in convs]
    x = torch.randn(batch, 1, size, size)
    net(x).float().mean().backward()
    for h in hooks:
        h.remove()
    rows = []
    for name, module, shape, needs_grad in shapes:
        inp = torch.randn(shape).requires_grad_(needs_grad)
        with torch.no_grad():
            grad = torch.randn_like(module(inp))

        def step(module=module, inp=inp, grad=grad):
            module.zero_grad(set_to_none=True)
            inp.grad = None
            module(inp).backward(grad)

        flops, _ = count_flops(step)
        seconds = median_cpu(step, rounds, warmup=1)
        k = module.kernel_size[0]
        rows.append({"layer": name.removeprefix("net.model."), "type": type(module).__name__, "in": module.in_channels,
                     "out": module.out_channels, "kernel": k, "stride": module.stride[0], "input_hw": shape[-1],
                     "gflop": flops / 1e9, "cpu_ms": seconds * 1e3, "gflops": flops / seconds / 1e9})
    return rows


def flop_part(args) -> dict:
    classes = args.classes
    net = make_segmentor(classes)
    peaks = peak_rows(args.matmul_size, args.conv_batch, args.conv_channels, args.conv_size, args.rounds)
    matmul_peak, conv_peak = peaks[0]["gflops"], peaks[1]["gflops"]
    rows = []

    def add_row(label: str, step, batch: int, flops: int, seconds: float, note: str = "") -> None:
        gflops = flops / seconds / 1e9
        rows.append({"setting": label, "batch": batch, "gflop": flops / 1e9, "cpu_s": seconds, "gflops": gflops,
                     "of_matmul_peak": gflops / matmul_peak, "of_conv_peak": gflops / conv_peak, "note": note})

    flops_at = {}
    for batch in args.flop_batches:
        step = segmentor_step(net, batch, args.flop_size, classes)
        flops, by_op = count_flops(step)
        flops_at[batch] = (flops, by_op)
        add_row("fp32", step, batch, flops, median_cpu(step, args.rounds, args.warmup))
    if "channels_last" in args.extras:
        net_cl = make_segmentor(classes).to(memory_format=torch.channels_last)
        net_cl.load_state_dict(net.state_dict())
        for batch in args.flop_batches:
            step = segmentor_step(net_cl, batch, args.flop_size, classes, channels_last=True)
            add_row("fp32 channels_last", step, batch, flops_at[batch][0], median_cpu(step, args.rounds, args.warmup))
    compile_note = None
    if "compile" in args.extras:
        try:
            net_c = make_segmentor(classes)
            net_c.load_state_dict(net.state_dict())
            compiled = torch.compile(net_c)
            for batch in args.flop_batches:
                step = segmentor_step(compiled, batch, args.flop_size, classes)
                start = time.perf_counter()
                step()  # compiles
                compile_s = time.perf_counter() - start
                add_row("fp32 torch.compile", step, batch, flops_at[batch][0], median_cpu(step, args.rounds, args.warmup),
                        note=f"first call {compile_s:.0f} s wall")
        except Exception as error:  # noqa: BLE001 - any failure of the compiler: a row skipped, with the reason
            compile_note = f"torch.compile skipped: {type(error).__name__}: {str(error).splitlines()[0][:300]}"
            print(compile_note, flush=True)
    batch = args.flop_batches[0]
    ops, categories = profile_step(segmentor_step(net, batch, args.flop_size, classes), args.top_ops)
    layers = conv_layers(net, batch, args.flop_size, args.rounds)
    return {"segmentor": {"channels": list(net.net.channels), "strides": list(net.net.strides),
                          "res_units": net.net.num_res_units, "classes": classes, "image_size": args.flop_size,
                          "params": sum(p.numel() for p in net.parameters())},
            "flops_by_op": {str(b): v[1] for b, v in flops_at.items()},
            "peaks": peaks, "rows": rows, "profile_batch": batch, "profile_ops": ops, "profile_categories": categories,
            "conv_layers": layers, "compile_note": compile_note}


# -- report --------------------------------------------------------------------------------------------------------
def machine() -> dict:
    info = {"cpu_model": platform.processor() or "unknown", "logical_cpus": None, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        flags = set(fields.get("flags", "").split())
        info.update(cpu_model=fields.get("model name", info["cpu_model"]), cpu_family=fields.get("cpu family"),
                    cpu_model_number=fields.get("model"), cpu_mhz=fields.get("cpu MHz"),
                    logical_cpus=text.count("processor\t:"),
                    simd=sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "avx512_vnni"}))
    except OSError:
        pass
    return info


def _cell(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def report(result: dict) -> str:
    m = result["machine"]
    lines = ["# Where a training run's CPU time goes, and the segmentor step against this CPU's peak", "",
             f"Command: `{result['command']}`", "",
             f"Machine: {m['cpu_model']} (cpu family {m.get('cpu_family')}, model {m.get('cpu_model_number')}, "
             f"{m.get('cpu_mhz')} MHz, {m.get('logical_cpus')} logical CPUs, {', '.join(m.get('simd', []))}), "
             f"torch {m['torch']}, {m['torch_threads']} torch thread(s). Times are this process's CPU seconds "
             "(`time.process_time`), so a neighbour's load on the shared cores does not count; it can still slow "
             "memory-bound work through the shared L3 cache.", ""]
    runs = result.get("runs", [])
    if runs:
        lines += ["## Part 1: a run's CPU time by phase", "",
                  "Each setting: `fit_and_test` with `--config cpu --config <method>` "
                  + " ".join(f"`{a}`" for a in result["base_args"])
                  + f", {runs[0]['iterations']} iterations, one validation (at the last), then the test ("
                  + ("with surface distances" if result["assd"] else "Dice only, no surface distances, as compare tests its runs")
                  + ")."
                  " CPU s per iteration = the phase's CPU seconds / "
                  "iterations (validation, set-up and test amortised over them); share = of the whole run's CPU.", ""]
        header = "| phase | " + " | ".join(f"{r['setting']}: CPU s / it | share" for r in runs) + " |"
        lines += [header, "|---" + "|---|---" * len(runs) + "|"]
        for phase, label in PHASES.items():
            if all(r["phases"][phase]["cpu_s"] == 0 for r in runs):
                continue
            cells = " | ".join(f"{_cell(r['phases'][phase]['per_iteration'])} | {r['phases'][phase]['share']:.1%}" for r in runs)
            lines.append(f"| {label} | {cells} |")
        cells = " | ".join(f"**{_cell(r['process_cpu_s'] / max(r['iterations'], 1))}** | 100% " for r in runs)
        lines.append(f"| **whole run** | {cells}|")
        lines += ["", "| setting | iterations | process CPU s | wall s | median iteration CPU s | validations | "
                      "test mean Dice | torch threads | data.num_workers |", "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            dice = "" if r["test_dice_mean"] is None else f"{100 * r['test_dice_mean']:.2f}"
            lines.append(f"| {r['setting']} | {r['iterations']} | {r['process_cpu_s']:.1f} | {r['wall_s']:.1f} | "
                         f"{r['iteration_cpu_s_median']:.4f} | {r['validations']} | {dice} | {r['torch_threads']} | "
                         f"{r['data_num_workers']} |")
        workers = {r["data_num_workers"] for r in runs}
        data_share = max(r["phases"]["data"]["share"] for r in runs)
        if workers == {0}:
            lines += ["", f"data.num_workers is 0 (the cpu preset's): the loader's slicing and augmentation run in the "
                          f"training process between two iterations, on the critical path; they take at most "
                          f"{data_share:.1%} of a run's CPU here, the most that loader workers could take off it."]
        else:
            lines += ["", f"data.num_workers {sorted(workers)}: the loader works in child processes, whose CPU this process "
                          "does not count; the data row is the training process's wait and hand-over only."]
    flops = result.get("flops")
    if flops:
        s = flops["segmentor"]
        lines += ["", "## Part 2: the segmentor step's FLOP/s", "",
                  f"Segmentor: ResidualUNet channels {s['channels']}, strides {s['strides']}, res units {s['res_units']}, "
                  f"{s['classes']} classes, {s['params']:,} parameters, {s['image_size']} px; one forward + supervised "
                  "loss + backward (FLOPs from FlopCounterMode: convolutions and matmuls, forward and backward), "
                  f"median CPU s of {result['rounds']} rounds, 1 thread.", "",
                  "| kernel (peak microbenchmark) | GFLOP | CPU s | GFLOP/s |", "|---|---|---|---|"]
        for p in flops["peaks"]:
            lines.append(f"| {p['kernel']} | {p['gflop']:.3f} | {p['cpu_s']:.4f} | {p['gflops']:.1f} |")
        lines += ["", "| segmentor step | batch | GFLOP | CPU s | GFLOP/s | of matmul peak | of conv peak | note |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in flops["rows"]:
            lines.append(f"| {r['setting']} | {r['batch']} | {r['gflop']:.3f} | {r['cpu_s']:.4f} | {r['gflops']:.1f} | "
                         f"{r['of_matmul_peak']:.1%} | {r['of_conv_peak']:.1%} | {r['note']} |")
        if any("compile" in r["setting"] for r in flops["rows"]):
            lines += ["", "torch.compile's rows: medians after its first call, which compiles (seconds only where "
                          "inductor's on-disk cache of an earlier run holds the kernels; about a minute cold)."]
        if flops.get("compile_note"):
            lines += ["", flops["compile_note"]]
        total = sum(flops["profile_categories"].values())
        lines += ["", f"Profile of one fp32 step at batch {flops['profile_batch']} (torch.profiler, self CPU time by op "
                      f"category; total {1e3 * total:.0f} ms under the profiler):", "",
                  "| category | self CPU ms | share |", "|---|---|---|"]
        for category, seconds in flops["profile_categories"].items():
            lines.append(f"| {category} | {1e3 * seconds:.1f} | {seconds / total:.1%} |")
        lines += ["", "| top op | self CPU ms | share | calls | category |", "|---|---|---|---|---|"]
        for o in flops["profile_ops"]:
            lines.append(f"| `{o['op']}` | {o['self_cpu_ms']:.1f} | {o['share']:.1%} | {o['calls']} | {o['category']} |")
        layers = flops["conv_layers"]
        conv_flops = sum(layer["gflop"] for layer in layers)
        conv_ms = sum(layer["cpu_ms"] for layer in layers)
        step = next((r for r in flops["rows"] if r["setting"] == "fp32" and r["batch"] == flops["profile_batch"]), None)
        lines += ["", "Each convolution alone (forward + backward at the input it sees in the step, "
                      f"batch {flops['profile_batch']}): together {conv_flops:.2f} GFLOP in {conv_ms:.0f} ms, "
                      f"{conv_flops / conv_ms * 1e3:.1f} GFLOP/s"
                  + (f"; the whole step takes {1e3 * step['cpu_s']:.0f} ms, so {1e3 * step['cpu_s'] - conv_ms:.0f} ms "
                     f"({1 - conv_ms / (1e3 * step['cpu_s']):.0%}) of it is not convolution." if step else "."), "",
                  "| layer | type | in -> out | kernel / stride | input px | GFLOP | CPU ms | GFLOP/s | share of conv FLOPs |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for layer in layers:
            lines.append(f"| {layer['layer']} | {layer['type']} | {layer['in']} -> {layer['out']} | {layer['kernel']} / "
                         f"{layer['stride']} | {layer['input_hw']} | {layer['gflop']:.4f} | {layer['cpu_ms']:.1f} | "
                         f"{layer['gflops']:.1f} | {layer['gflop'] / conv_flops:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run_breakdown", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data_cache/abdomen128", help="a slice cache (mkdseg preprocess)")
    parser.add_argument("--phantom", action="store_true", help="a generated phantom in a temporary folder instead (tiny runs)")
    parser.add_argument("--image-size", type=int, default=None, help="data.image_size (default: the cache's)")
    parser.add_argument("--n-target", type=int, default=2)
    parser.add_argument("--steps", type=int, default=250, help="iterations per run; its one validation is at the last")
    parser.add_argument("--settings", nargs="*", default=["joint", "recipe", "recipe_no_mix_back"], choices=list(SETTINGS))
    parser.add_argument("--assd", action="store_true", help="test with surface distances (compare's runs do not)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flop-size", type=int, default=128, help="slice size of the FLOP/s part")
    parser.add_argument("--flop-batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--classes", type=int, default=5, help="segmentor classes (the abdominal cache: 4 organs + background)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--conv-size", type=int, default=128)
    parser.add_argument("--conv-batch", type=int, default=16)
    parser.add_argument("--conv-channels", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top-ops", type=int, default=12)
    parser.add_argument("--extras", nargs="*", default=["channels_last", "compile"], choices=["channels_last", "compile"],
                        help="extra rows of the FLOP/s table")
    parser.add_argument("--no-compile", action="store_true",
                        help="no torch.compile: the runs uncompiled (the cpu preset compiles) and no compile row")
    parser.add_argument("--no-flops", action="store_true", help="part 1 only")
    parser.add_argument("--out", type=Path, help="folder for results.md and results.json")
    parser.add_argument("--render", type=Path, help="only write results.md again from this results.json (its own command)")
    args, extra = parser.parse_known_args(argv)
    if args.render:
        text = report(json.loads(args.render.read_text()))
        print(text)
        atomic_write_text((args.out or args.render.parent) / "results.md", text)
        return 0
    if args.no_compile:
        args.extras = [e for e in args.extras if e != "compile"]
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.run_breakdown " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.phantom:
        base = ["--data.source=phantom", f"--data.root={tempfile.mkdtemp(prefix='run-breakdown-phantom-')}",
                "--data.phantom_subjects=6", "--data.phantom_slices=8",
                "--data.n_val=1", "--data.batch_size=2", "--data.samples_per_epoch=8", "--trainer.log_every_n_steps=1"]
    else:
        base = [f"--data.root={args.root}"]
    base.append(f"--data.n_target={args.n_target}")
    if args.image_size:
        base.append(f"--data.image_size={args.image_size}")
    base += extra
    result = {"command": command, "base_args": base, "assd": args.assd, "rounds": args.rounds, "runs": []}
    for name in args.settings:
        run = run_setting(name, base, args.steps, ["--model.init_args.compile=false"] if args.no_compile else [], args.assd)
        print(json.dumps({k: v for k, v in run.items() if k != "phases"}), flush=True)
        result["runs"].append(run)
    torch.set_num_threads(args.threads)
    if not args.no_flops:
        result["flops"] = flop_part(args)
    result["machine"] = machine()
    text = report(result)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "results.md", text)
        atomic_write_text(args.out / "results.json", json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
