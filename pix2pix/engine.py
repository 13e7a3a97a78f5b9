"""The machinery around the pix2pix step (trainer.Pix2Pix.update): where G and D run and how fast,
and what keeps a long run safe. None of it changes the objective.

- placement: the device, channels_last on CUDA (distributed.memory_format);
- processes: synchronised batch norm and DDP when several train (distributed.py);
- speed: fused Adam, bf16 autocast on CUDA, torch.compile, or the whole step captured as a CUDA
  graph and replayed (graphs.py), which needs capturable Adam reading its LR from a device tensor;
- safety: SkipGuard skips a step whose loss is not finite and puts batch norm's statistics back;
- the LR schedule, the epoch and step counters, and their state for checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from pix2pix.config import Config, decay_epochs, training_precision
from pix2pix.distributed import World, max_, memory_format, synchronised, wrap
from pix2pix.errors import Pix2PixError
from pix2pix.graphs import GraphedStep
from pix2pix.models import build_discriminator, build_generator


def linear_decay(epochs: int, decay_epochs: int):
    """LR factor for epoch e (0-based): 1 for the first epochs - decay_epochs, then linear towards 0.

    The paper's shape: for 100 + 100, epochs 1-100 (1-based) train at the full LR and epoch 100 + k
    at 1 - k/101, so the last one at 1/101. The reference code (junyanz/pytorch-CycleGAN-and-pix2pix)
    uses the same formula but steps its scheduler at the start of each epoch, one step ahead of
    ours: its decay starts at epoch 100 and its last epoch trains at LR 0. Ours keeps every epoch
    training, so a one-epoch run (`-S epochs=1`) still learns.
    """
    constant = epochs - decay_epochs
    return lambda e: 1.0 - max(0, e + 1 - constant) / float(decay_epochs + 1)


class SkipGuard:
    """Skips a step whose loss is NaN or infinite, without a host sync, and stops the run after too
    many such steps in a row.

    The fused Adam kernels skip their update when the optimiser's `found_inf` is 1; `flag` sets it
    on the device from the loss, maxed over the processes (their gradients were averaged, so a bad
    loss in one spoils all). A bad D loss skips G's update too (G's loss was computed against the
    same suspect pass). The forward passes have already written the step's batch statistics into
    the batch-norm running buffers: `restore` puts all of them back. So a skipped step leaves G and
    D as they were, except that when only G's loss is bad, D's weight update (made from a finite
    loss before G's was known) is kept. The counters stay on the device and are read with the losses.
    """

    def __init__(self, optimisers, world: World, device: torch.device, limit: int):
        """`optimisers` in the order they step."""
        self.optimisers, self.world, self.limit = optimisers, world, limit
        for opt in optimisers:
            opt.found_inf = torch.zeros((), device=device)
        # skipped steps in total; the current run of consecutive skipped steps; the longest run so
        # far (never reset: train.max_nonfinite_steps bounds every run of the training)
        self.counts = torch.zeros(3, device=device)

    def flag(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Before opt.step(): mark its update to be skipped if `loss` is not finite or an update
        before it in this step (the optimisers come in step order) was skipped."""
        max_(opt.found_inf.copy_(~torch.isfinite(loss)), self.world)
        for earlier in self.optimisers[:self.optimisers.index(opt)]:
            torch.maximum(opt.found_inf, earlier.found_inf, out=opt.found_inf)

    def skipped(self) -> torch.Tensor:
        """On the device: 1 if any update of the current step was marked to be skipped."""
        return torch.stack([opt.found_inf for opt in self.optimisers]).amax()

    def count(self) -> None:
        """After the step's last flag: a step is skipped when either update was."""
        bad = self.skipped()
        total, run, longest = self.counts.unbind()
        total.add_(bad)
        run.add_(bad).mul_(bad)  # a good step resets the run
        torch.maximum(longest, run, out=longest)

    def restore(self, buffers: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
        """After the step's last flag: put back the running statistics of a skipped step."""
        bad = self.skipped().bool()
        for buf, old in zip(buffers, saved):
            buf.copy_(torch.where(bad, old, buf))

    @property
    def taken(self) -> torch.Tensor:
        """On the device: whether the last step was taken."""
        return self.counts[1] == 0

    def check(self, steps: int) -> int:
        """Host read; stops the run past the limit of skipped steps in a row. Returns the total skipped."""
        total, _, longest = self.counts.tolist()
        if longest > self.limit:
            raise Pix2PixError(f"training stopped at step {steps}: {int(longest)} steps in a row had a NaN or "
                               f"infinite loss (train.max_nonfinite_steps is {self.limit}); lower optim.lr or check "
                               "the data. The last good checkpoint is kept; fix and re-run to resume from it")
        return int(total)


class Engine:
    """G and D placed and wrapped for this device and these processes, their optimisers and LR
    schedules, and the guarded, autocast passes the step is written with."""

    def __init__(self, cfg: Config, device: torch.device, world: World = World()):
        self.cfg, self.device, self.world = cfg, device, world
        G, D = (synchronised(net, world, cfg.model.norm) for net in (build_generator(cfg), build_discriminator(cfg)))
        self.layout = memory_format(device)
        self.G, self.D = G.to(device, memory_format=self.layout), D.to(device, memory_format=self.layout)
        self._plain_G: nn.Module | None = None
        # torch.compile: the forward/backward of G and D become fused kernels after a warm-up of the
        # first steps; self.G / self.D stay the plain modules (state dicts, generation, export)
        compiled = torch.compile if cfg.train.compile else (lambda m: m)
        self.g_fwd = compiled(wrap(self.G, world, device))
        self.d_fwd = compiled(wrap(self.D, world, device))
        # G's step runs D frozen: outside DDP, which would wait for gradients D does not get there
        self.d_judge = self.d_fwd if world.size == 1 else compiled(self.D)
        self.graphs = device.type == "cuda" and cfg.train.cuda_graphs and world.size == 1  # DDP's hooks stay eager
        self.graphed: GraphedStep | None = None  # captured on the first full batch
        o = cfg.optim

        def adam(params):  # a captured step reads lr from a device tensor the schedule fills
            lr = torch.tensor(o.lr, device=device) if self.graphs else o.lr
            return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), fused=True, capturable=self.graphs)

        self.opt_g, self.opt_d = adam(self.G.parameters()), adam(self.D.parameters())
        self.guard = SkipGuard([self.opt_d, self.opt_g], world, device, cfg.train.max_nonfinite_steps)
        self.buffers = [*self.G.buffers(), *self.D.buffers()]  # batch-norm running statistics
        rule = linear_decay(cfg.epochs, decay_epochs(cfg))
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, rule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, rule)
        self.epoch = 0  # epochs completed
        self.steps = 0  # optimisation steps taken
        # bf16 autocast needs no grad scaler. No cast cache: graphs forbid it.
        bf16 = training_precision(cfg, device.type) == "bf16"
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)

    # --- the passes a step is written with
    def generate(self, real_a: torch.Tensor) -> torch.Tensor:
        with self.autocast:
            return self.g_fwd(real_a)

    def discriminate(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D's logits (fp32) for (condition, image), training D."""
        self.D.requires_grad_(True)
        with self.autocast:
            return self.d_fwd(torch.cat([condition, image], 1)).float()

    def judge(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D's logits (fp32) for (condition, image) with D frozen: gradients reach the image only."""
        self.D.requires_grad_(False)
        with self.autocast:
            return self.d_judge(torch.cat([condition, image], 1)).float()

    def descend(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimiser step on `loss` (skipped on the device if the loss is not finite)."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.guard.flag(opt, loss)
        opt.step()

    @contextlib.contextmanager
    def guarded(self):
        """Around the tensor work of one step: a skipped step's batch statistics are put back."""
        saved = [b.clone() for b in self.buffers]
        yield
        self.guard.count()
        self.guard.restore(self.buffers, saved)

    # --- running steps
    def run(self, update: Callable, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """update(real_a, real_b) -> losses, replayed from a CUDA graph where that applies."""
        if self.graphs and (self.graphed is None or self.graphed.fits(real_a)):
            if self.graphed is None:
                self.graphed = GraphedStep(update, [self.G, self.D], [self.opt_g, self.opt_d], real_a, real_b)
            losses = self.graphed(real_a, real_b)
        else:
            losses = update(real_a, real_b)
        self.steps += 1
        return losses

    def generator(self) -> nn.Module:
        """G for generating outside the training step. Under SyncBatchNorm that is a plain twin with
        G's weights: the synchronised layers would wait for the other processes."""
        if not any(isinstance(m, nn.SyncBatchNorm) for m in self.G.modules()):
            return self.G
        if self._plain_G is None:
            self._plain_G = build_generator(self.cfg).to(self.device, memory_format=self.layout)
        self._plain_G.load_state_dict(self.G.state_dict())
        return self._plain_G

    def end_epoch(self) -> None:
        self.epoch += 1
        self.sched_g.step()
        self.sched_d.step()

    @property
    def lr(self) -> float:
        return float(self.opt_g.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {
            "generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "epoch": self.epoch, "steps": self.steps, "nonfinite": self.guard.counts,
        }

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        for name in ("opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])
        self.epoch, self.steps = state["epoch"], state["steps"]
        self.guard.counts.copy_(state["nonfinite"])
