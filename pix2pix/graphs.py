"""A whole training step (D update, then G update) captured once as a CUDA graph and replayed.

At batch 1 a pix2pix step is many small kernels, and launching them one by one from Python takes
the host longer than the GPU takes to run them, so eager PyTorch leaves a fast GPU idle most of the
time (docs/performance.md). A replay is one launch.
See https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture for the rules followed:
static input tensors, capturable optimisers, warm-up on a side stream before capture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _state_tensors(modules: list[nn.Module]) -> list[torch.Tensor]:
    return [t for m in modules for t in m.state_dict(keep_vars=True).values()]


class GraphedStep:
    """Replays `update(a, b) -> losses` for inputs shaped like the first ones; other shapes
    (a short last batch) must take the eager path (`fits` says which)."""

    def __init__(self, update: Callable, modules: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                 a: torch.Tensor, b: torch.Tensor, warmup: int = 3):
        self.a = a.clone(memory_format=torch.channels_last)
        self.b = b.clone(memory_format=torch.channels_last)
        # the warm-up steps really train: remember everything they touch and put it back after
        weights = [t.detach().clone() for t in _state_tensors(modules)]
        states = [{p: {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()} for opt in optimizers]
        rng = torch.cuda.get_rng_state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # cuDNN autotuning, allocator warm-up, lazy Adam state
            for _ in range(warmup):
                update(self.a, self.b)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.losses = update(self.a, self.b)
        with torch.no_grad():
            for t, saved in zip(_state_tensors(modules), weights):
                t.copy_(saved)
            for opt, saved in zip(optimizers, states):
                for p, state in opt.state.items():
                    for k, v in state.items():  # a fresh Adam state is all zeros (step included)
                        v.copy_(saved[p][k]) if p in saved else v.zero_()
        torch.cuda.set_rng_state(rng)

    def fits(self, a: torch.Tensor) -> bool:
        return a.shape == self.a.shape

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.a.copy_(a)
        self.b.copy_(b)
        self.graph.replay()
        return self.losses.clone()
