"""Every method's options, as the CLI lists them and as checkpoints record them.

A method declares only its own options and forwards the rest (``**kwargs``) to its base class; jsonargparse
follows them up the class hierarchy. These tests fail if an option goes missing on the way (a base that
stops forwarding, a renamed or dropped parameter) or is not recorded in ``hparams``, from which a
checkpoint rebuilds the method.
"""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import ArgumentParser

import mkdseg.methods as methods
from mkdseg.methods import (
    Baseline, FineTune, JointTraining, MeanTeacher, MKDModule, MKDNoAlignment, MKDOracleTranslation,
    OfflineOracleTranslation, OfflineTranslation, OnlineTranslation, SegmentationMethod,
    SharedKernelKD, WeakToStrong, XShape,
)

from conftest import TINY_MODEL, cli_options

EVALUATION = {"image_size", "data_spec", "eval_batch_size"}
SEGMENTORS = EVALUATION | {
    "in_channels", "seg_channels", "seg_strides", "seg_res_units", "lr_seg", "seg_betas", "seg_lr_decay", "seg_lr_decay_epochs",
    "seg_lr_schedule", "compile",
}
TRANSLATOR = {
    "gen_filters", "gen_blocks", "gen_downsampling", "disc_filters", "disc_layers", "norm", "gan_mode", "lambda_cyc",
    "pool_size", "lr_gen", "lr_disc", "gan_betas", "compile", "gen_upsampling", "gan_lr_decay",
}
DISTILLATION = {"lambda_kd_real", "lambda_kd_syn", "kd_temperature"}
JOINT = SEGMENTORS | {"assistant_weight"}
MEAN_TEACHER = JOINT | {"lambda_consistency", "consistency_rampup_steps", "ema_decay", "input_noise", "student_view"}

# MKD's options written out in full: the paper's method must list every one of them
MKD = {
    "image_size", "data_spec", "in_channels", "gen_filters", "gen_blocks", "gen_downsampling", "disc_filters",
    "disc_layers", "norm", "seg_channels", "seg_strides", "seg_res_units", "gan_mode", "lambda_cyc", "lambda_sup_gen",
    "lambda_kd_real", "lambda_kd_syn", "kd_temperature", "pool_size", "lr_gen", "lr_disc", "lr_seg", "gan_betas",
    "seg_betas", "seg_lr_decay", "seg_lr_decay_epochs", "eval_batch_size", "compile", "gen_upsampling", "gan_lr_decay",
    "translator_warmup_steps", "lambda_sup_ramp_steps", "seg_lr_schedule",
}
# a baseline's, likewise
BASELINE = {
    "image_size", "data_spec", "in_channels", "seg_channels", "seg_strides", "seg_res_units", "lr_seg", "seg_betas",
    "seg_lr_decay", "seg_lr_decay_epochs", "eval_batch_size", "seg_lr_schedule", "compile",
}

EXPECTED = {
    Baseline: BASELINE,
    FineTune: SEGMENTORS | {"pretrain_steps"},
    JointTraining: JOINT,
    XShape: SEGMENTORS,
    OfflineOracleTranslation: JOINT,
    SharedKernelKD: SEGMENTORS | {"lambda_proto", "proto_temperature"},
    MeanTeacher: MEAN_TEACHER,
    WeakToStrong: MEAN_TEACHER | {"confidence", "pseudo_labeller", "round_steps", "mix", "mix_sources", "mix_back",
                                  "feature_dropout"},
    MKDNoAlignment: SEGMENTORS | DISTILLATION,
    MKDOracleTranslation: SEGMENTORS | DISTILLATION,
    OfflineTranslation: SEGMENTORS | TRANSLATOR | {"translation_steps"},
    OnlineTranslation: SEGMENTORS | TRANSLATOR | {"lambda_shape", "target_segmentors"},
    MKDModule: MKD,
}


def tiny(cls: type) -> SegmentationMethod:
    options = {k: v for k, v in TINY_MODEL.items() if k in EXPECTED[cls]}
    return cls(**options)


def test_the_groups_compose_mkds_and_the_baselines_options():
    assert MKD == SEGMENTORS | TRANSLATOR | DISTILLATION | {"lambda_sup_gen", "translator_warmup_steps", "lambda_sup_ramp_steps"}
    assert BASELINE == SEGMENTORS


def test_every_method_is_listed_here():
    exported = {c for c in vars(methods).values() if inspect.isclass(c) and issubclass(c, SegmentationMethod)}
    assert exported - {SegmentationMethod} == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_the_cli_lists_every_option_of_a_method_with_its_help(cls):
    options = cli_options(cls)
    assert set(options) == EXPECTED[cls]
    undocumented = sorted(name for name, action in options.items() if not action.help)
    assert not undocumented, f"{cls.__name__}: options without a description in the class that declares them"


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_hparams_record_every_option(cls):
    model = tiny(cls)
    assert set(model.hparams) == EXPECTED[cls]
    assert model.hparams.image_size == TINY_MODEL["image_size"]  # a base class's option, as given
    assert model.hparams.eval_batch_size == TINY_MODEL["eval_batch_size"]


def test_mkd_defaults_are_the_papers():
    defaults = {name: action.default for name, action in cli_options(MKDModule).items()}
    assert defaults["seg_channels"] == (32, 64, 128, 256, 512) and defaults["seg_strides"] == (2, 2, 2, 2)
    assert (defaults["lambda_cyc"], defaults["lambda_kd_real"], defaults["lambda_kd_syn"]) == (10.0, 0.5, 1.0)
    assert (defaults["lr_gen"], defaults["lr_disc"], defaults["lr_seg"]) == (2e-4, 2e-4, 2e-4)
    assert (defaults["gan_mode"], defaults["gan_lr_decay"], defaults["norm"]) == ("lsgan", "constant", "instance")


@pytest.mark.parametrize("cls, option, value", [
    (MKDModule, "gan_lr_decay", "cosine"),
    (MeanTeacher, "student_view", "cutmix"),
    (WeakToStrong, "pseudo_labeller", "oracle"),
    (WeakToStrong, "mix", "mixup"),
    (WeakToStrong, "mix_sources", ["unlabelled", "elsewhere"]),
])
def test_a_choice_outside_its_literal_is_refused_naming_the_option(cls, option, value):
    with pytest.raises(ValueError, match=f"model.{option} must be one of"):  # built in Python
        cls(**{k: v for k, v in TINY_MODEL.items() if k in EXPECTED[cls]}, **{option: value})
    with pytest.raises(Exception, match=option):  # on the command line
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "model")
        parser.parse_args([f"--model.{option}={value if isinstance(value, str) else list(value)}"])
