"""Paired random jitter on the device with kornia (the paper's 286-resize, 256-crop, flip).

Input and target travel as one 6-channel tensor, so every random crop and flip is applied to both
identically, and independently per sample in the batch.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.geometry.transform import resize
from torch import nn

from pix2pix.data.device_data import to_unit


class PairJitter(nn.Module):
    def __init__(self, image_size: int, load_scale: float = 286 / 256, flip: bool = True):
        super().__init__()
        self.load_size = round(image_size * load_scale)
        self.crop = K.RandomCrop((image_size, image_size), p=1.0)
        self.flip = K.RandomHorizontalFlip(p=0.5) if flip else nn.Identity()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 6, H, W) -> jittered float (N, 6, size, size) in [-1, 1]."""
        x = to_unit(batch)
        if self.load_size != x.shape[-1]:
            x = resize(x, (self.load_size, self.load_size), interpolation="bicubic", align_corners=False).clamp_(-1, 1)
        return self.flip(self.crop(x))
