"""The training loop: paired jitter on the device, one D step then one G step per batch, in one
process or in each of several (DDP, see distributed.py); the main process's per-epoch validation,
grid, metrics and checkpoint are in reporting.py.

The hot loop never syncs with the host per step: losses accumulate on the device and are read
every `train.log_every` steps (for the progress bar) and at the end of each epoch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pix2pix import checkpoints
from pix2pix.config import Config, decay_epochs, flatten, training_precision
from pix2pix.data.augment import PairJitter
from pix2pix.data.device_data import batches, load_split, pixels_hash, place, split_pair
from pix2pix.data.sources import direction_of
from pix2pix.data.tiles import tile_size
from pix2pix.distributed import (World, epoch_order, from_main, gather, join, leave, max_, memory_format, sum_,
                                 synchronised, wrap)
from pix2pix.errors import Pix2PixError
from pix2pix.evaluation import mean_target
from pix2pix.graphs import GraphedStep
from pix2pix.losses import LOSS_NAMES, GANLoss, discriminator_loss, generator_loss
from pix2pix.models import build_discriminator, build_generator
from pix2pix.reporting import Reporter, RunFiles, Silent
from pix2pix.tracking import check_tracking_store

log = logging.getLogger(__name__)


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


class Pix2Pix:
    """Generator, discriminator, their optimisers and schedules: everything a checkpoint holds.

    With several processes (`world`), G and D train under DDP with synchronised batch norm.
    """

    def __init__(self, cfg: Config, device: torch.device, world: World = World()):
        self.cfg, self.device, self.world = cfg, device, world
        G, D = (synchronised(net, world, cfg.model.norm) for net in (build_generator(cfg), build_discriminator(cfg)))
        self.layout = memory_format(device)
        self.G, self.D = G.to(device, memory_format=self.layout), D.to(device, memory_format=self.layout)
        self._plain_G: nn.Module | None = None
        self.gan = GANLoss(cfg.optim.gan_mode)
        # torch.compile: the forward/backward of G and D become fused kernels after a warm-up of the
        # first steps; self.G / self.D stay the plain modules (state dicts, generation, export)
        compiled = torch.compile if cfg.train.compile else (lambda m: m)
        self.g_fwd = compiled(wrap(self.G, world, device))
        self.d_fwd = compiled(wrap(self.D, world, device))
        # G's step runs D frozen: outside DDP, which would wait for gradients D does not get there
        self.d_judge = self.d_fwd if world.size == 1 else compiled(self.D)
        cuda = device.type == "cuda"
        self.graphs = cuda and cfg.train.cuda_graphs and world.size == 1  # DDP's gradient hooks stay eager
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

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """One D update then one G update; returns the detached losses [G_GAN, G_L1, D_real, D_fake]."""
        if self.graphs and (self.graphed is None or self.graphed.fits(real_a)):
            if self.graphed is None:
                self.graphed = GraphedStep(self.update, [self.G, self.D], [self.opt_g, self.opt_d], real_a, real_b)
            losses = self.graphed(real_a, real_b)
        else:
            losses = self.update(real_a, real_b)
        self.steps += 1
        return losses

    def update(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """The tensor work of one step, fit for CUDA graph capture (no host syncs, no Python state)."""
        saved = [b.clone() for b in self.buffers]  # for a skipped step (SkipGuard.restore)
        with self.autocast:
            fake_b = self.g_fwd(real_a)
            # D: real pairs -> 1, fake pairs -> 0 (fake detached: no gradient into G here)
            self.D.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            real_logits = self.d_fwd(torch.cat([real_a, real_b], 1))
            fake_logits = self.d_fwd(torch.cat([real_a, fake_b.detach()], 1))
            loss_d, d_real, d_fake = discriminator_loss(self.gan, real_logits.float(), fake_logits.float())
        loss_d.backward()
        self.guard.flag(self.opt_d, loss_d)
        self.opt_d.step()
        with self.autocast:
            # G: fool D, stay close to the target
            self.D.requires_grad_(False)
            self.opt_g.zero_grad(set_to_none=True)
            logits = self.d_judge(torch.cat([real_a, fake_b], 1))
            loss_g, g_gan, g_l1 = generator_loss(self.gan, logits.float(), fake_b.float(), real_b, self.cfg.lambda_l1)
        loss_g.backward()
        self.guard.flag(self.opt_g, loss_g)
        self.guard.count()
        self.guard.restore(self.buffers, saved)
        self.opt_g.step()
        return torch.stack([g_gan, g_l1, d_real, d_fake]).detach()

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
            "epoch": self.epoch, "steps": self.steps, "nonfinite": self.guard.counts, "params": flatten(self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        for name in ("opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])
        self.epoch, self.steps = state["epoch"], state["steps"]
        self.guard.counts.copy_(state["nonfinite"])


def train(cfg: Config, tiles_dir: str | Path, checkpoint_dir: str | Path, model_path: str | Path,
          best_model_path: str | Path, files: RunFiles) -> dict:
    """Train for cfg.epochs, resuming an unfinished run in checkpoint_dir; returns the last epoch's metrics.

    Under torchrun every process trains on its shard of each epoch; the main one alone reads and
    writes checkpoints and reports (see Reporter): a grid, metrics rows and MLflow metrics every
    epoch, checkpoint_dir/last.pt every train.checkpoint_every epochs, and at the end the curves, the
    final generator to model_path and the best epoch's to best_model_path.
    """
    world, device = join(cfg)
    try:
        return _train(cfg, world, device, Path(tiles_dir), Path(checkpoint_dir), model_path, best_model_path, files)
    except RuntimeError as err:  # gloo and NCCL report a peer that stopped answering this way
        if world.size > 1 and "timed out" in str(err).lower():
            raise Pix2PixError(f"process {world.rank} waited more than train.dist_timeout_s={cfg.train.dist_timeout_s:g} s "
                               "for the others: one is stuck or gone (raise the timeout if validation on the "
                               "main process takes longer)") from None
        raise
    finally:
        leave(world)


def _train(cfg, world, device, tiles_dir, checkpoint_dir, model_path, best_model_path, files) -> dict:
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if world.main:
        check_tracking_store(cfg)  # an unreachable MLflow server fails here, before any work
    torch.backends.cudnn.benchmark = device.type == "cuda"
    direction = direction_of(cfg.dataset, cfg.direction)
    train_data = load_split(tiles_dir, "train", direction, size=tile_size(cfg, "train"))
    val_data = load_split(tiles_dir, "val", direction, size=cfg.image_size) if world.main else None
    dataset_hash = pixels_hash(train_data, val_data) if world.main else ""
    if world.size == 1:  # resident for the whole run (several processes: train_epoch places each epoch's shard)
        train_data = place(train_data, device, cfg.train.device_data_gb)
    log.info("train %d pairs of %dx%d on %s (process %d of %d)", len(train_data), cfg.image_size, cfg.image_size,
             device, world.rank + 1, world.size)

    model = Pix2Pix(cfg, device, world=world)
    # read on the main process, sent to the others (their machines may not have the file)
    state = from_main(checkpoints.for_resume(cfg, checkpoint_dir, dataset_hash, device if world.size == 1 else "cpu")
                      if world.main else None, world)
    if state:
        model.load_state_dict(state)
    checkpoints.seed_process(state, world.rank, cfg.seed)
    jitter = PairJitter(cfg.image_size, cfg.augment.flip)
    reporter = (Reporter(cfg, val_data.to(device), files, checkpoint_dir, dataset_hash, state,
                         mean_target(train_data, cfg.image_size))
                if world.main else Silent())
    row = reporter.last_row
    # one bar for the whole run (its ETA is the run's), restarted where a resumed run stopped
    epoch_images = len(epoch_order(len(train_data), 0, cfg.seed, world)) * world.size
    bar = tqdm(total=cfg.epochs * epoch_images, initial=model.epoch * epoch_images, unit="img",
               desc=f"epoch {model.epoch + 1}/{cfg.epochs}", disable=not world.main)
    try:
        with logging_redirect_tqdm():  # log lines print above the bar, not into it
            for epoch in range(model.epoch, cfg.epochs):
                row = {"epoch": epoch + 1, "lr": model.lr,
                       **train_epoch(model, jitter, train_data, cfg, reporter.log_step_losses, bar)}
                model.end_epoch()
                reporter.epoch(model, row)
                if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                    rngs = gather(checkpoints.rng_states(), world)  # every process's, to resume each exactly
                    reporter.checkpoint({**model.state_dict(), "rng": rngs, **reporter.state()})
            reporter.finish(model, model_path, best_model_path)
    finally:
        bar.close()
        reporter.close()
    return row


def train_epoch(model: Pix2Pix, jitter: PairJitter, data: torch.Tensor, cfg: Config, on_log=lambda losses, step: None,
                bar: tqdm | None = None) -> dict:
    """One pass over this process's shard of `data` in a fresh random order; returns mean losses
    (over all processes) and images/s.

    Every `train.log_every` steps the losses are read from the device once: the progress bar (the
    run's, or one for this epoch) shows the epoch's running means and `on_log(losses, step)` gets
    the means since the previous read.
    """
    world, device = model.world, model.device
    order = epoch_order(len(data), model.epoch, cfg.seed, world)
    if world.size > 1:  # this process's shard goes to its device for the epoch
        data, order = place(data[order], device, cfg.train.device_data_gb), torch.arange(len(order))
    order = order.to(data.device)
    epoch_images = len(order) * world.size
    sums = torch.zeros(len(LOSS_NAMES), device=device)
    counted = torch.zeros((), device=device)  # images of the steps taken (not skipped as non-finite)
    read, read_n, seen = torch.zeros(len(LOSS_NAMES)), 0, 0  # sums and images at the previous read; images so far
    skipped_before = model.guard.check(model.steps)
    start = time.perf_counter()
    model.G.train()
    model.D.train()
    desc = f"epoch {model.epoch + 1}/{cfg.epochs}"
    own = bar is None
    if own:
        bar = tqdm(total=epoch_images, unit="img", leave=False, disable=not world.main)
    bar.set_description(desc)
    with bar if own else contextlib.nullcontext():
        for step, batch in enumerate(batches(data, order, cfg.batch_size // world.size, device)):
            batch = jitter(batch)
            real_a, real_b = split_pair(batch.contiguous(memory_format=model.layout))
            losses = model.step(real_a, real_b)
            taken = model.guard.taken
            sums += torch.where(taken, losses, 0) * len(batch)
            counted += taken * len(batch)
            seen += len(batch) * world.size  # every process takes a batch of the same size
            bar.update(len(batch) * world.size)
            if step % cfg.train.log_every == 0:  # the only host sync in the loop
                model.guard.check(model.steps)
                now = sum_(sums.clone(), world).cpu()  # a clone: on CPU .cpu() would alias sums
                bar.set_postfix({k: f"{v:.3f}" for k, v in zip(LOSS_NAMES, (now / seen).tolist())})
                on_log(dict(zip(LOSS_NAMES, ((now - read) / (seen - read_n)).tolist())), model.steps)
                read, read_n = now, seen
    seconds = time.perf_counter() - start
    skipped = model.guard.check(model.steps) - skipped_before
    sum_(sums, world)
    sum_(counted, world)
    means = (sums / counted.clamp(min=1)).tolist()  # over the steps that were not skipped
    return {**dict(zip(LOSS_NAMES, means)), "images_per_s": epoch_images / seconds, "skipped_steps": skipped}
