"""What every training method shares: evaluation on whole volumes and its summary, checkpoint identity.

A method subclasses :class:`SegmentationMethod`, builds its networks, implements ``training_step``
and ``configure_optimizers``, and says how it predicts in :meth:`predict_components`. Validation,
test, prediction and metric logging are the same for every method; the result files of a test are
written from :meth:`SegmentationMethod.evaluation_summary` by
:class:`mkdseg.callbacks.reports.EvaluationReportWriter`.

Each validation also decides the post-processing (:mod:`mkdseg.postprocess`: per predictor and structure,
whether keeping only the largest connected component raises the mean validation Dice), which the
checkpoints saved after it hold and ``test``, ``predict`` and ``mkdseg segment`` apply.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from mkdseg import postprocess
from mkdseg.data.nifti import load_label
from mkdseg.data.roi import CANONICAL_PLANES
from mkdseg.data.canvas import ScanCanvas, record_geometry
from mkdseg.labels import DataSpec
from mkdseg.lightning_private import sanity_checking
from mkdseg.metrics import format_table, summarize, volume_scores
from mkdseg.mirroring import Mirroring, mirrored_mean
from mkdseg.methods.distributed import gather_per_rank
from mkdseg.methods.options import check_at_least, check_choice, check_positive
from mkdseg.methods.segmentors import LRSchedule, compile_refusal, lr_factor
from mkdseg.methods.training_state import load_training_state, resume_training_state, save_training_state

METHOD_KEY = "mkdseg_method"


class SegmentationMethod(L.LightningModule):
    """Base class. Subclasses build their networks with ``self.num_classes`` outputs and set ``primary_predictor``.

    A subclass declares only its own options and forwards the rest (``**kwargs``) to ``super().__init__``:
    the CLI follows them up the class hierarchy to list every option, and this class records them all in
    ``hparams``, from which a checkpoint rebuilds the method. The options here are those every method takes:
    its segmentors' layout (:func:`~mkdseg.methods.segmentors.make_segmentor`), Adam settings and schedule
    (:mod:`mkdseg.methods.segmentors`), compilation, and how volumes are evaluated.

    Args:
        in_channels: channels of the input slices (and of the translators' images).
        seg_channels: the segmentor's widths, one per level (MONAI UNet's ``channels``).
        seg_strides: its down-sampling strides, one fewer than ``seg_channels``; their product divides ``image_size``.
        seg_res_units: residual units per block.
        lr_seg: the segmentors' Adam learning rate (paper: 2e-4).
        seg_betas: their Adam betas.
        seg_lr_decay: the segmentors' learning rate is multiplied by this, in (0, 1], every
            ``seg_lr_decay_epochs`` epochs (paper: 0.9 every 2 epochs).
        seg_lr_decay_epochs: epochs between two such decays.
        seg_lr_schedule: ``step`` (the decay above, the paper's), ``poly`` (nnU-Net's ``(1 - i / N) ** 0.9`` over the
            run's ``trainer.max_steps`` N) or ``cosine`` (from ``lr_seg`` to 0 over N). The last two are functions of
            the iteration, so a resumed run stays exact; a run extended past N needs the same N to repeat.
        compile: ``torch.compile`` each network that learns (in place: checkpoints keep their keys) when the trainer
            sets the model up. On a CPU it makes the cpu preset's segmentor step 1.3x faster after a few seconds of
            compiling (``benchmarks/run_breakdown.py``); at paper size on a GPU compiling takes minutes.
        image_size: slice size the networks are trained on (divisible by every network's size divisor);
            the CLI links it from the data (``data.image_size``).
        data_spec: what the model segments, a :class:`mkdseg.labels.DataSpec` as a dict: the structures in
            class order, the target dataset's codes, how slices were cut. The CLI links it from the data
            (``data.data_spec``), so it is stored in every checkpoint; ``None`` is the cardiac phantom's.
        eval_batch_size: slices per forward when whole volumes are segmented (validation, test, prediction).
    """

    #: name of the component of :meth:`predict_components` used at test time and by ``mkdseg segment``
    primary_predictor: str = "seg"
    #: tests score surface distances too (most of a test's time on whole scans); a caller that needs only
    #: Dice from a test (``mkdseg compare``'s look at the final weights) switches them off
    assd_in_test: bool = True
    #: ``test`` (and ``predict``) apply the post-processing that validation decided (:attr:`postprocessing`)
    postprocess_in_test: bool = True
    #: anatomical axes (``LR``, ``AP``, ``SI``) of test-time mirroring in validation, test and prediction
    #: (:mod:`mkdseg.mirroring`; ``mkdseg segment --mirror`` for scans); none by default
    test_mirror: tuple[str, ...] = ()

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: Sequence[int] = (32, 64, 128, 256, 512),
        seg_strides: Sequence[int] = (2, 2, 2, 2),
        seg_res_units: int = 2,
        lr_seg: float = 2e-4,
        seg_betas: tuple[float, float] = (0.9, 0.999),
        seg_lr_decay: float = 0.9,
        seg_lr_decay_epochs: int = 2,
        seg_lr_schedule: LRSchedule = "step",
        compile: bool = False,
        image_size: int = 256,
        data_spec: dict | None = None,
        eval_batch_size: int = 16,
    ):
        super().__init__()
        check_positive(lr_seg=lr_seg)
        check_choice("seg_lr_schedule", seg_lr_schedule, LRSchedule)
        if not 0 < seg_lr_decay <= 1:
            raise ValueError(f"model.seg_lr_decay must be in (0, 1], got {seg_lr_decay}")
        check_at_least(1, seg_lr_decay_epochs=seg_lr_decay_epochs, eval_batch_size=eval_batch_size)
        self.save_hyperparameters()  # the options of every __init__ up the call chain, the subclasses' too
        self.spec = DataSpec.from_dict(data_spec)
        self.image_size, self.num_classes, self.eval_batch_size = image_size, self.spec.num_classes, eval_batch_size
        self._eval_rows: list[dict] = []
        self._summaries: dict[str, dict] = {}  # stage -> its latest evaluation (see evaluation_summary)
        self._scan_labels: dict[str, tuple] = {}  # label file -> (classes, spacing), see scan_label
        self._largest_rows: list[dict] = []  # validation rows scored with each structure's largest component kept
        #: the latest validation's post-processing decision (:mod:`mkdseg.postprocess`), saved in checkpoints
        self.postprocessing: dict | None = None
        self._compiled: set[str] = set()
        self._compile_refused = False  # no C++ compiler: said once, then trained uncompiled

    # -- networks, their compilation and the segmentors' schedule ------------------------------
    def network(self, name: str) -> torch.nn.Module:
        """The network called ``name`` (an attribute name, or a translator network's)."""
        return getattr(self, name)

    def networks_to_compile(self) -> tuple[str, ...]:
        """Names of the networks ``compile`` compiles: every child module with parameters that learn (a mean
        teacher, which only follows, is left as it is)."""
        return tuple(name for name, module in self.named_children()
                     if any(p.requires_grad for p in module.parameters()))

    def configure_model(self) -> None:
        if not self.hparams.get("compile", False) or self._compile_refused:
            return
        refusal = compile_refusal(self.device)
        if refusal:
            rank_zero_warn(f"model.compile=true: {refusal}; training uncompiled")
            self._compile_refused = True
            return
        for name in self.networks_to_compile():
            if name not in self._compiled:  # the hook runs once per trainer call
                self.network(name).compile()
                self._compiled.add(name)

    def segmentor_optimizers(self) -> list:
        """The optimizers whose learning rate is ``lr_seg`` (and follows ``seg_lr_schedule``)."""
        raise NotImplementedError

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # a function of global_step, not a scheduler's own counter: a resumed run stays exact
        schedule = self.hparams.get("seg_lr_schedule", "step")
        if schedule == "step":
            return
        horizon = self.trainer.max_steps
        if horizon is None or horizon < 1:
            raise ValueError(f"model.seg_lr_schedule={schedule} needs trainer.max_steps (the iterations it decays over)")
        rate = self.hparams.lr_seg * lr_factor(schedule, self.global_step, horizon)
        for optimizer in self.segmentor_optimizers():
            for group in optimizer.param_groups:
                group["lr"] = rate

    # -- prediction ----------------------------------------------------------------------------
    def predict_components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x [B, 1, H, W]`` in [-1, 1] -> ``{name: softmax probabilities [B, C, H, W]}``."""
        raise NotImplementedError

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``[B, C, H, W]`` of the method's test-time predictor."""
        return self.predict_components(x)[self.primary_predictor]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode, no gradients, inside the block; the previous mode afterwards."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def sample_outputs(self, x_t: torch.Tensor, x_a: torch.Tensor) -> dict:
        """What the sample figures show: ``{"segmentation": {predictor: labels [B, H, W]}}``; methods with
        a translator add ``"translation": (G_at(x_a), G_ta(G_at(x_a)))``. Inputs and outputs on the CPU."""
        with self.evaluating():
            components = self.predict_components(x_t.to(self.device))
            return {"segmentation": {k: v.argmax(1).cpu() for k, v in components.items()}}

    def mirroring(self, plane: str | None = None) -> Mirroring | None:
        """The test-time mirroring of :attr:`test_mirror` for slices laid out as ``plane`` (default: the canonical
        layout of ``spec.slice_axis``, as ``mkdseg segment`` cuts scans); ``None`` without mirroring."""
        if not self.test_mirror:
            return None
        return Mirroring.of(plane or CANONICAL_PLANES[self.spec.slice_axis], self.test_mirror, self.spec.structures)

    def evaluation_components(self, x: torch.Tensor, plane: str | None = None) -> dict[str, torch.Tensor]:
        """:meth:`predict_components` as validation, test and prediction run it: averaged over the mirror images
        of :attr:`test_mirror` (:func:`mkdseg.mirroring.mirrored_mean`, as ``mkdseg segment --mirror``)."""
        return mirrored_mean(self.predict_components, x, self.mirroring(plane))

    def postprocessing_classes(self, predictor: str | None = None) -> list[int]:
        """Class indices whose largest connected component alone ``predictor`` (default: the primary) keeps, as
        the latest validation decided (:attr:`postprocessing`); none without a decision."""
        names = postprocess.structures_to_keep(self.postprocessing, predictor or self.primary_predictor)
        return postprocess.class_indices(self.spec.structures, names)

    @torch.no_grad()
    def predict_volume(self, image: torch.Tensor, plane: str | None = None) -> dict[str, torch.Tensor]:
        """``image [S, 1, H, W]`` -> ``{name: label map [S, H, W] uint8}``, in chunks of ``eval_batch_size`` slices."""
        labels: dict[str, list[torch.Tensor]] = {}
        for chunk in image.split(self.eval_batch_size):
            for name, probs in self.evaluation_components(chunk.to(self.device), plane).items():
                labels.setdefault(name, []).append(probs.argmax(1).to(torch.uint8).cpu())
        return {name: torch.cat(parts) for name, parts in labels.items()}

    # -- evaluation ----------------------------------------------------------------------------
    def _evaluate(self, batch: dict, with_assd: bool, stage: str = "val") -> None:
        """Score every predictor on one volume. A volume preprocessed from a labelled scan is scored as a user
        gets it: its slices' predictions put back into the scan's own grid (as ``mkdseg segment`` and
        ``predict`` write them) against the scan's own label file, in mm of that grid. The phantom's volumes, which
        have no scan behind them, are scored on their cached slices.

        ``stage`` ``val``: each predictor is also scored with every structure's largest connected component kept
        (what the post-processing decision weighs); ``test``: the decision is applied (:attr:`postprocess_in_test`)."""
        record, plane = batch.get("record"), batch.get("plane")
        label_file = record.extra.get("source_label_path") if record is not None else None
        if label_file:
            predictions, truth, spacing = self.predict_in_scan(batch["image"], record, plane), *self.scan_label(record)
        elif "label" in batch:
            predictions, truth = self.predict_volume(batch["image"], plane), batch["label"]
            spacing = batch["spacing"].tolist()
        else:
            raise ValueError(f"volume {batch.get('subject')} has no label: cannot evaluate")
        if stage == "test" and self.postprocess_in_test:
            keep = {name: self.postprocessing_classes(name) for name in predictions}
            predictions = {name: postprocess.keep_largest(np.asarray(pred), keep[name]) if keep[name] else pred
                           for name, pred in predictions.items()}
        self._eval_rows += self._score(predictions, truth, spacing, with_assd, batch["subject"])
        if stage == "val":
            every = range(1, self.num_classes)
            largest = {name: postprocess.keep_largest(np.asarray(pred), every) for name, pred in predictions.items()}
            self._largest_rows += self._score(largest, truth, spacing, False, batch["subject"])

    def _score(self, predictions: dict, truth, spacing, with_assd: bool, subject: str) -> list[dict]:
        rows = []
        for name, pred in predictions.items():
            scores = volume_scores(pred, truth, self.spec.structures, spacing, with_assd)
            rows += [{"predictor": name, "subject": subject, "structure": s, **values} for s, values in scores.items()]
        return rows

    @torch.no_grad()
    def predict_in_scan(self, image: torch.Tensor, record, plane: str | None = None) -> dict[str, np.ndarray]:
        """``image [S, 1, H, W]`` (a cached volume) -> ``{predictor: class indices in the scan's own grid}``;
        ``plane``: the slices' in-plane layout (the record's, :meth:`SliceCache.plane`), for :attr:`test_mirror`."""
        canvases: dict[str, ScanCanvas] = {}
        positions = torch.arange(len(image))
        plane = plane or getattr(record, "plane", None)
        for chunk, at in zip(image.split(self.eval_batch_size), positions.split(self.eval_batch_size)):
            for name, probs in self.evaluation_components(chunk.to(self.device), plane).items():
                canvases.setdefault(name, ScanCanvas(record, self.spec)).paste(probs.float().cpu(), at.numpy())
        in_scan = {}
        for name, canvas in canvases.items():
            labels, geometry = canvas.labels()
            in_scan[name] = labels.reshape(geometry.shape3d)
        return in_scan

    def scan_label(self, record) -> tuple[np.ndarray, tuple[float, float, float]]:
        """The run's classes in the scan's own label file (other codes: background) and the scan's voxel size,
        read once per volume and kept: validation scores the same volumes again and again."""
        key = record.extra["source_label_path"]
        if key not in self._scan_labels:
            geometry = record_geometry(record)
            codes = load_label(key, like=geometry)
            self._scan_labels[key] = (self.spec.codes_to_classes(codes), geometry.spacing)
        return self._scan_labels[key]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, with_assd=False, stage="val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, with_assd=self.assd_in_test, stage="test")

    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """The primary predictor's probabilities of a cached volume, slice by slice (``[S, C, H, W]``, on the CPU),
        and the classes its post-processing keeps the largest component of (``keep_largest``)."""
        primary = self.primary_predictor
        chunks = [self.evaluation_components(c.to(self.device), batch.get("plane"))[primary].float().cpu()
                  for c in batch["image"].split(self.eval_batch_size)]
        keep = self.postprocessing_classes() if self.postprocess_in_test else []
        return {"subject": batch["subject"], "record": batch["record"], "probabilities": torch.cat(chunks), "keep_largest": keep}

    def on_validation_epoch_start(self) -> None:
        self._eval_rows, self._largest_rows = [], []

    on_test_epoch_start = on_validation_epoch_start

    def _gathered_rows(self, rows: list[dict] | None = None) -> list[dict]:
        """Rows (default: the evaluation's) from every rank, without the duplicates a padded distributed sampler adds."""
        rows = [r for part in gather_per_rank(self._eval_rows if rows is None else rows) for r in part]
        unique = {(r["predictor"], r["subject"], r["structure"]): r for r in rows}
        return list(unique.values())

    def _log_summary(self, stage: str) -> dict:
        rows = self._gathered_rows()
        summary = summarize(rows, "dice")
        for predictor, entry in summary.items():
            for structure, stats in entry.items():
                if math.isnan(stats["mean"]):
                    continue
                key = f"{stage}/dice_{predictor}" if structure == "mean" else f"{stage}/dice_{predictor}/{structure}"
                # identical on every rank after the gather, so no further reduction
                self.log(key, stats["mean"], sync_dist=False, rank_zero_only=False)
        primary = summary.get(self.primary_predictor, {}).get("mean", {}).get("mean", float("nan"))
        if not math.isnan(primary):
            self.log(f"{stage}/dice", primary, prog_bar=True)
        self._summaries[stage] = {"stage": stage, "step": self.global_step, "rows": rows, "dice": summary}
        if stage == "val":
            self._decide_postprocessing(rows)
        if self.postprocessing is not None and (stage == "val" or self.postprocess_in_test):  # what the scores reflect
            self._summaries[stage]["postprocessing"] = self.postprocessing
        return self._summaries[stage]

    def _decide_postprocessing(self, rows: list[dict]) -> None:
        """Per predictor and structure: keep only the largest connected component where that raised the mean Dice
        over the validation subjects (:func:`mkdseg.postprocess.decide`); kept in :attr:`postprocessing`, which
        the checkpoint saved after this validation writes. Logs ``val/dice_postprocessed`` (the primary
        predictor's mean Dice with the decision applied). Not on the sanity check's untrained weights."""
        largest = self._gathered_rows(self._largest_rows)
        if not largest or sanity_checking(self):
            return
        keep = postprocess.decide(rows, largest)
        self.postprocessing = {"keep_largest": keep, "step": int(self.global_step),
                               "subjects": sorted({str(r["subject"]) for r in rows}),
                               "dice": postprocess.mean_dice(rows, largest)}
        chosen = summarize(postprocess.apply_decision(rows, largest, keep), "dice")
        value = chosen.get(self.primary_predictor, {}).get("mean", {}).get("mean", float("nan"))
        if not math.isnan(value):
            self.log("val/dice_postprocessed", value, sync_dist=False, rank_zero_only=False)

    def evaluation_summary(self, stage: str) -> dict:
        """The latest evaluation of ``stage`` (``"val"`` or ``"test"``): ``{"stage", "step", "rows": per volume,
        structure and predictor, "dice": summarize(rows)}`` (and ``"assd"`` after a test). What callbacks,
        the demo and the benchmark harness report (:class:`mkdseg.callbacks.reports.EvaluationReportWriter` writes the
        test's to ``summary.json`` and ``per_case.csv``); ``LookupError`` if ``stage`` has not been evaluated."""
        if stage not in self._summaries:
            raise LookupError(f"no {stage} evaluation has run on this {type(self).__name__}")
        return self._summaries[stage]

    def on_validation_epoch_end(self) -> None:
        self._log_summary("val")

    def on_test_epoch_end(self) -> None:
        result = self._log_summary("test")
        result["assd"] = summarize([r for r in result["rows"] if "assd" in r], "assd")
        if self.trainer.is_global_zero:  # the files: mkdseg.callbacks.reports.EvaluationReportWriter
            rank_zero_info("\nPer-volume Dice (%) over the test volumes, mean ± std:\n" + format_table(result["dice"]))
            rank_zero_info("\nASSD (mm), mean ± std:\n" + format_table(result["assd"], "ASSD", scale=1.0))

    # -- checkpoints ---------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[METHOD_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        save_training_state(self, checkpoint)  # random streams of every rank, loss scales (exact resume)
        if self.postprocessing is not None:  # the decision of the validation this checkpoint follows
            checkpoint[postprocess.CHECKPOINT_KEY] = self.postprocessing

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_training_state(self, checkpoint)
        self.postprocessing = checkpoint.get(postprocess.CHECKPOINT_KEY)

    def on_train_start(self) -> None:
        resume_training_state(self)

    # -- learning-rate schedules ---------------------------------------------------------------
    def completed_an_epoch(self) -> bool:
        """Whether the iterations trained so far end a whole epoch of data. Lightning also runs its
        epoch-end hooks when ``max_steps`` stops a run in mid-epoch; an epoch schedule stepped there
        would make a run that is later extended differ from one trained straight through."""
        batches = self.trainer.num_training_batches
        return self.trainer.global_step > 0 and batches != float("inf") and self.trainer.global_step % batches == 0

    def step_epoch_schedulers(self) -> None:
        """Manual optimisation: step every scheduler at the end of each whole epoch of data."""
        if self.completed_an_epoch():
            schedulers = self.lr_schedulers() or []
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Automatic optimisation: Lightning steps ``interval: epoch`` schedulers here; only whole epochs count."""
        if self.completed_an_epoch():
            scheduler.step() if metric is None else scheduler.step(metric)
