"""Generating with a trained G: paper mode in batches gives what one image per pass gives."""

import copy

import pytest
import torch
from torch import nn

from pix2pix.generation import apply
from pix2pix.models import UnetGenerator, init_weights


def generator(memory_format=torch.contiguous_format, norm="batch") -> nn.Module:
    """A 128-px G (two dropout blocks) whose batch norms' affine parameters and running statistics
    are far from their initial values, as after training: eval mode differs from paper mode."""
    torch.manual_seed(0)
    G = init_weights(UnetGenerator(3, 3, 128, ngf=8, norm=norm))
    for bn in (m for m in G.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.weight.data.normal_(1, 0.5), bn.bias.data.normal_(0, 0.5)
        bn.running_mean.normal_(0, 1), bn.running_var.uniform_(0.5, 2)
    return G.to(memory_format=memory_format)


def one_by_one_in_train_mode(G: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The paper's test protocol as the reference runs it: train mode, one image per pass; image i's
    dropout drawn by torch's own dropout from the global generator seeded with seed + i."""
    saved = copy.deepcopy(G.state_dict())
    G.train()
    outputs = []
    with torch.no_grad():
        for i in range(len(x)):
            torch.manual_seed(seed + i)
            outputs.append(G(x[i:i + 1]))
    G.load_state_dict(saved)  # train mode updated the running statistics
    return torch.cat(outputs)


@pytest.mark.parametrize("memory_format,norm", [(torch.contiguous_format, "batch"), (torch.channels_last, "batch"),
                                                (torch.contiguous_format, "instance")])  # training's layouts; norms
def test_batched_paper_mode_equals_one_train_mode_pass_per_image(memory_format, norm):
    G = generator(memory_format, norm)
    x = (torch.rand(5, 3, 128, 128) * 2 - 1).to(memory_format=memory_format)
    expected = one_by_one_in_train_mode(G, x, seed=3)
    before = copy.deepcopy(G.state_dict())
    rng = torch.get_rng_state()
    for batch_size in (1, 2, 5):
        torch.testing.assert_close(apply(G, x, "paper", batch_size, seed=3), expected, atol=1e-5, rtol=0)
    assert torch.equal(torch.get_rng_state(), rng)  # the training's random stream is not touched
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())  # nor the running statistics
    assert not torch.allclose(apply(G, x, "paper", 5, seed=4), expected, atol=1e-3)  # other masks
    assert not torch.allclose(apply(G, x, "eval", 5), expected, atol=1e-3)  # not eval mode


def test_each_image_keeps_its_output_whatever_the_batch_around_it():
    G = generator()
    x = torch.rand(4, 3, 128, 128) * 2 - 1
    G.train()  # as during training: generating leaves the mode as it was
    both = apply(G, x, "paper", 4, seed=7)
    torch.testing.assert_close(apply(G, x[2:], "paper", 2, seed=9), both[2:], atol=1e-5, rtol=0)  # seed + index
    assert G.training
    torch.testing.assert_close(apply(G, x, "eval", 1), apply(G, x, "eval", 4), atol=1e-5, rtol=0)
