"""Channels-last memory format for the networks: a speed option.

On CPUs with AVX-512 (and on GPUs with tensor cores) oneDNN/cuDNN convolutions run faster on NHWC
tensors, mostly together with bfloat16 (``trainer.precision: bf16-mixed``); measured in
``benchmarks/RESULTS.md`` ("Cheaper CPU iterations: bf16 and channels_last"). Converting the weights is enough: a convolution with channels-last
weights returns channels-last activations whatever its input's layout, and the network's first input
(one channel) is laid out the same either way. The arithmetic is the same, so results agree with the
default format to float rounding, not to the bit.
"""

from __future__ import annotations

import lightning as L
import torch


class ChannelsLast(L.Callback):
    """Converts the module's 4D parameters to channels-last once, when the trainer sets it up.

    Usage: ``mkdseg fit ... --trainer.callbacks+=mkdseg.callbacks.memory_format.ChannelsLast``.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
