"""The pix2pix objective: conditional GAN loss + lambda_l1 * L1 (Isola et al. 2017, eq. 4)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# The four losses a step reports, in this order: metrics columns, progress bar, curves, MLflow
# (and dvc.yaml's `losses` plot: tests/test_stage_deps.py checks it names the same).
LOSS_NAMES = ("G_GAN", "G_L1", "D_real", "D_fake")


class GANLoss(nn.Module):
    """vanilla: BCE on logits (the paper); lsgan: least squares (Mao et al.), same targets 1/0."""

    def __init__(self, mode: str = "vanilla"):
        super().__init__()
        if mode not in ("vanilla", "lsgan"):
            raise ValueError(f"unknown gan mode {mode!r}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(logits, target)
        return F.mse_loss(logits, target)


def generator_loss(gan: GANLoss, fake_logits, fake, target, lambda_l1: float):
    """G fools D on (condition, fake) and stays close to the target in L1. Returns (total, gan, l1)."""
    loss_gan = gan(fake_logits, True)
    loss_l1 = F.l1_loss(fake, target)
    return loss_gan + lambda_l1 * loss_l1, loss_gan, loss_l1


def discriminator_loss(gan: GANLoss, real_logits, fake_logits):
    """Halved, as in the paper, to slow D relative to G. Returns (total, real, fake)."""
    loss_real = gan(real_logits, True)
    loss_fake = gan(fake_logits, False)
    return 0.5 * (loss_real + loss_fake), loss_real, loss_fake
