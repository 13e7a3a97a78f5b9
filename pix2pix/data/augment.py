"""Paired random jitter on the device with kornia: the paper's 256-crop and flip of train tiles
that prepare already resized to the load size (286, see tiles.py).

Input and target travel as one 6-channel tensor, so every random crop and flip is applied to both
identically, and independently per sample in the batch.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn

from pix2pix.data.device_data import to_unit


class PairJitter(nn.Module):
    def __init__(self, image_size: int, flip: bool = True):
        super().__init__()
        self.crop = K.RandomCrop((image_size, image_size), p=1.0)
        self.flip = K.RandomHorizontalFlip(p=0.5) if flip else nn.Identity()

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 6, H, W), H and W >= image_size -> jittered float (N, 6, image_size, image_size) in [-1, 1]."""
        return self.flip(self.crop(to_unit(batch)))
