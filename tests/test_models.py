import pytest
import torch
from torch import nn

from pix2pix.models import PatchDiscriminator, UnetGenerator, init_weights


def count(net):
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_reference_implementation():
    assert count(UnetGenerator(3, 3, 256, ngf=64, norm="batch")) == 54_413_955
    assert count(PatchDiscriminator(6, ndf=64, n_layers=3, norm="batch")) == 2_768_705


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_generator_keeps_the_shape_and_halves_the_image_to_one_pixel_at_its_bottleneck(size):
    G = UnetGenerator(3, 3, size, ngf=4).eval()
    innermost = [m for m in G.modules() if isinstance(m, nn.Conv2d)][-1]  # the last down-sampling
    seen = []
    innermost.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert G(torch.randn(2, 3, size, size)).shape == (2, 3, size, size)
    assert seen == [(2, 32, 1, 1)]  # ngf * 8 channels at 1x1, whatever the size


@pytest.mark.parametrize("size", [48, 100, 16])
def test_generator_rejects_sizes_the_unet_cannot_halve_to_one(size):
    with pytest.raises(ValueError, match="power of two"):
        UnetGenerator(3, 3, size)


def test_generator_structure_is_the_papers():
    G = UnetGenerator(3, 3, 256, ngf=64)
    convs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8  # 8 down-samplings for 256 -> 1x1
    assert [c.out_channels for c in convs] == sorted([64, 128, 256, 512, 512, 512, 512, 512])  # C64..C512
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in G.modules()) == 3
    assert sum(isinstance(m, nn.Dropout) for m in UnetGenerator(3, 3, 256, dropout=False).modules()) == 0
    assert isinstance(list(G.modules())[-1], nn.Tanh)


def test_discriminator_patch_map_shape():
    D = PatchDiscriminator(6, ndf=8)
    assert D(torch.randn(1, 6, 256, 256)).shape == (1, 1, 30, 30)


def test_discriminator_receptive_field_is_70():
    D = PatchDiscriminator(6, ndf=8).double().eval()
    x = torch.randn(1, 6, 256, 256, dtype=torch.double, requires_grad=True)
    out = D(x)
    out[0, 0, 15, 15].backward()
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero()
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


def test_init_is_normal_002_and_norm_weights_around_one():
    G = init_weights(UnetGenerator(3, 3, 64, ngf=64))
    conv = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    bn = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(conv.mean()) < 1e-3 and abs(conv.std() - 0.02) < 1e-3
    assert abs(bn.mean() - 1) < 5e-3 and abs(bn.std() - 0.02) < 5e-3


def test_instance_norm_variant_has_biases_and_no_affine_norm():
    G = UnetGenerator(3, 3, 64, ngf=8, norm="instance")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    norms = [m for m in G.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine for m in norms)
    assert all(m.bias is not None for m in G.modules() if isinstance(m, nn.Conv2d))
