"""The pix2pix objective's terms, as the paper states them."""

import math

import pytest
import torch

from pix2pix.losses import GANLoss, discriminator_loss, generator_loss


def test_vanilla_gan_loss_is_bce_on_logits():
    gan = GANLoss("vanilla")
    zeros = torch.zeros(1, 1, 4, 4)
    assert gan(zeros, True).item() == pytest.approx(math.log(2))
    assert gan(torch.full((2, 1, 3, 3), 20.0), True).item() < 1e-6
    assert gan(torch.full((2, 1, 3, 3), 20.0), False).item() == pytest.approx(20.0, rel=1e-4)


def test_lsgan_is_squared_error_to_targets():
    gan = GANLoss("lsgan")
    assert gan(torch.full((1, 1, 2, 2), 0.5), True).item() == pytest.approx(0.25)
    assert gan(torch.full((1, 1, 2, 2), 0.5), False).item() == pytest.approx(0.25)


def test_discriminator_loss_is_halved_sum():
    gan = GANLoss("vanilla")
    real, fake = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
    total, lr, lf = discriminator_loss(gan, real, fake)
    assert total.item() == pytest.approx(0.5 * (gan(real, True) + gan(fake, False)).item())
    assert lr.item() == pytest.approx(gan(real, True).item())


def test_generator_loss_is_gan_plus_lambda_l1():
    gan = GANLoss("vanilla")
    logits, fake, target = torch.randn(1, 1, 4, 4), torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    total, g_gan, g_l1 = generator_loss(gan, logits, fake, target, lambda_l1=100.0)
    assert g_l1.item() == pytest.approx((fake - target).abs().mean().item())
    assert total.item() == pytest.approx(g_gan.item() + 100.0 * g_l1.item(), rel=1e-6)
