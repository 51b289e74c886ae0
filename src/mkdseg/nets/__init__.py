"""Network architectures only: nothing here knows about training or Lightning."""

from mkdseg.nets.discriminator import NLayerDiscriminator
from mkdseg.nets.generator import ResnetBlock, ResnetGenerator
from mkdseg.nets.layers import init_weights, norm_layer
from mkdseg.nets.segmentor import ResidualUNet
from mkdseg.nets.shared_kernel_unet import SharedKernelUNet

__all__ = ["NLayerDiscriminator", "ResnetBlock", "ResnetGenerator", "ResidualUNet", "SharedKernelUNet", "init_weights", "norm_layer"]
