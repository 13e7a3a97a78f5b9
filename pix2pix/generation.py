"""Running a generator on images, in the paper's test mode or in eval mode: one home for both, used
by validation, the evaluate stage, translate, the MLflow model and the demo page.

- eval: the usual deterministic eval mode (dropout off, batch norm's running statistics).
- paper: as the paper tests (at batch 1, in train mode): dropout on, and batch norm normalising each
  image by its own statistics. Batches give the outputs of one pass per image: image i's dropout
  masks come from a generator seeded with seed + i, so an image gets the same output in any batch,
  and the global random state is not touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pix2pix.data.device_data import split_pair, to_unit
from pix2pix.errors import Pix2PixError

MODES = ("paper", "eval")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise Pix2PixError(f"mode is {mode!r}; allowed: {', '.join(MODES)}")


class PerImageStatistics:
    """Paper mode for a whole batch: forward hooks replace each batch norm's output by the
    per-image normalisation (batch norm on one image is instance normalisation with batch norm's
    affine parameters) and apply each image's dropout masks. G itself runs in eval mode, so its
    running statistics are not updated."""

    def __init__(self, G: nn.Module):
        self.generators: list[torch.Generator] = []
        self.handles = [m.register_forward_hook(self.normalise) for m in G.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.handles += [m.register_forward_hook(self.drop) for m in G.modules() if isinstance(m, nn.Dropout)]

    @staticmethod
    def normalise(bn, args, out):
        # into batch norm's own output: its memory format (distributed.memory_format) decides how
        # dropout lays out masks
        return out.copy_(F.instance_norm(args[0], weight=bn.weight, bias=bn.bias, eps=bn.eps))

    def drop(self, dropout, args, out):
        x = args[0]  # empty_like and bernoulli_ as torch's own CPU dropout draws them, image by image
        keep = torch.cat([torch.empty_like(x[:1]).bernoulli_(1 - dropout.p, generator=g) for g in self.generators])
        return x * keep.div_(1 - dropout.p)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def apply(G: nn.Module, inputs: torch.Tensor, mode: str, batch_size: int = 16, seed: int = 0) -> torch.Tensor:
    """G on float inputs in [-1, 1], `batch_size` at a time, in `mode` (MODES); the outputs do not
    depend on the batch size. No gradients are kept."""
    check_mode(mode)
    was_training = G.training
    G.eval()
    hooks = PerImageStatistics(G) if mode == "paper" else None
    try:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start:start + batch_size]
                if hooks:
                    hooks.generators = [torch.Generator(batch.device).manual_seed(seed + start + i)
                                        for i in range(len(batch))]
                outputs.append(G(batch).float())
        return torch.cat(outputs)
    finally:
        if hooks:
            hooks.close()
        G.train(was_training)


def generate(G: nn.Module, pairs_uint8: torch.Tensor, mode: str, seed: int):
    """uint8 (N, 6, H, W) pairs -> (inputs, outputs, targets) float in [-1, 1]."""
    inputs, targets = split_pair(to_unit(pairs_uint8))
    return inputs, apply(G, inputs, mode, seed=seed), targets
