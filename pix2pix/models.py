"""U-Net generator and 70x70 PatchGAN discriminator, as in Isola et al. 2017 and its reference code.

The U-Net is built recursively from one skip block (outermost -> innermost), exactly as in
junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py`, so parameter counts match it.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from pix2pix.config import valid_image_size


def norm_layer(kind: str):
    """batch: BatchNorm with affine params; instance: no affine, no running stats (reference)."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    raise ValueError(f"unknown norm {kind!r}")


class SkipBlock(nn.Module):
    """down -> submodule -> up, with the input concatenated to the output (except outermost)."""

    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, *, outermost=False,
                 innermost=False, norm=nn.BatchNorm2d, dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = norm is not nn.BatchNorm2d  # a norm with affine shift makes the bias redundant
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, norm(inner_nc), submodule, uprelu, upconv, norm(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with log2(image_size) down-samplings: the innermost feature map is 1x1.

    For 256x256 this is the paper's 8-down encoder C64-C128-C256-C512-C512-C512-C512-C512, with
    dropout 0.5 in the three ngf*8 decoder blocks around the bottleneck (reference `unet_256`).
    """

    def __init__(self, in_channels=3, out_channels=3, image_size=256, ngf=64, norm="batch", dropout=True):
        super().__init__()
        if not valid_image_size(image_size):
            raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
        num_downs = int(math.log2(image_size))
        norm = norm_layer(norm)
        block = SkipBlock(ngf * 8, ngf * 8, norm=norm, innermost=True)
        for _ in range(num_downs - 5):
            block = SkipBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, dropout=dropout)
        block = SkipBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = SkipBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = SkipBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = SkipBlock(out_channels, ngf, input_nc=in_channels, submodule=block, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Sequential):
    """PatchGAN: with n_layers=3 each output logit sees a 70x70 patch; 256x256 in -> 30x30 out.

    Input is concat(condition, image) along channels (conditional GAN).
    """

    def __init__(self, in_channels=6, ndf=64, n_layers=3, norm="batch"):
        norm = norm_layer(norm)
        use_bias = norm is not nn.BatchNorm2d
        layers = [nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=use_bias),
                norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        super().__init__(*layers)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Conv weights ~ N(0, gain), biases 0; BatchNorm weights ~ N(1, gain) (the paper's init)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


# The model.* params that shape G, as UnetGenerator's keyword arguments: saved with every generator
# file (generator_file.py), so that a new one is one edit here (and in params.yaml).
GENERATOR_OPTIONS = ("ngf", "norm", "dropout")


def build_generator(cfg) -> UnetGenerator:
    options = {k: getattr(cfg.model, k) for k in GENERATOR_OPTIONS}
    return init_weights(UnetGenerator(3, 3, cfg.image_size, **options))


def build_discriminator(cfg) -> PatchDiscriminator:
    m = cfg.model
    return init_weights(PatchDiscriminator(6, m.ndf, m.d_layers, m.norm))
