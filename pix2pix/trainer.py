"""The training loop: paired jitter on the device, one D step then one G step per batch, in one
process or in each of several (DDP, see distributed.py); the main process's per-epoch validation,
grid, metrics and checkpoint are in reporting.py.

The hot loop never syncs with the host per step: losses accumulate on the device and are read
every `train.log_every` steps (for the progress bar) and at the end of each epoch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from pix2pix import checkpoints
from pix2pix.config import Config, decay_epochs, flatten
from pix2pix.data.augment import PairJitter
from pix2pix.data.sources import direction_of
from pix2pix.data.device_data import batches, load_split, pixels_hash, place, split_pair
from pix2pix.distributed import World, epoch_order, from_main, gather, join, leave, max_, sum_, wrap
from pix2pix.errors import Pix2PixError
from pix2pix.graphs import GraphedStep
from pix2pix.losses import GANLoss, discriminator_loss, generator_loss
from pix2pix.models import build_discriminator, build_generator
from pix2pix.reporting import Reporter
from pix2pix.tracking import check_tracking_store

log = logging.getLogger(__name__)
LOSS_NAMES = ("G_GAN", "G_L1", "D_real", "D_fake")


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


class Pix2Pix:
    """Generator, discriminator, their optimisers and schedules: everything a checkpoint holds.

    fast=False gives the classic setup (fp32, NCHW, per-tensor Adam) for the benchmark's reference.
    With several processes (`world`), G and D train under DDP with synchronised batch norm.
    """

    def __init__(self, cfg: Config, device: torch.device, fast: bool = True, world: World = World()):
        self.cfg, self.device, self.world = cfg, device, world
        self.layout = torch.channels_last if fast else torch.contiguous_format
        G, D = build_generator(cfg), build_discriminator(cfg)
        if world.size > 1 and cfg.model.norm == "batch":  # statistics of the global batch, as one process would
            G, D = nn.SyncBatchNorm.convert_sync_batchnorm(G), nn.SyncBatchNorm.convert_sync_batchnorm(D)
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
        cuda = fast and device.type == "cuda"
        self.graphs = cuda and cfg.train.cuda_graphs and world.size == 1  # DDP's gradient hooks stay eager
        self.graphed: GraphedStep | None = None  # captured on the first full batch
        o = cfg.optim

        def adam(params):  # a captured step reads lr from a device tensor the schedule fills
            lr = torch.tensor(o.lr, device=device) if self.graphs else o.lr
            return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), fused=fast, capturable=self.graphs)

        self.opt_g, self.opt_d = adam(self.G.parameters()), adam(self.D.parameters())
        # Non-finite losses: the fused Adam kernels skip their update when `found_inf` is 1, decided
        # on the device (no host sync); counts of skipped steps are read with the losses.
        self.guard = fast
        if fast:
            self.opt_d.found_inf = torch.zeros((), device=device)
            self.opt_g.found_inf = torch.zeros((), device=device)
        self.nonfinite = torch.zeros(3, device=device)  # total, current run, longest run since read
        rule = linear_decay(cfg.epochs, decay_epochs(cfg))
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, rule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, rule)
        self.epoch = 0  # epochs completed
        self.steps = 0  # optimisation steps taken
        # bf16 autocast on CUDA needs no grad scaler; fp32 on CPU. No cast cache: graphs forbid it.
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda, cache_enabled=False)

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
        with self.autocast:
            fake_b = self.g_fwd(real_a)
            # D: real pairs -> 1, fake pairs -> 0 (fake detached: no gradient into G here)
            self.D.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            real_logits = self.d_fwd(torch.cat([real_a, real_b], 1))
            fake_logits = self.d_fwd(torch.cat([real_a, fake_b.detach()], 1))
            loss_d, d_real, d_fake = discriminator_loss(self.gan, real_logits.float(), fake_logits.float())
        loss_d.backward()
        if self.guard:  # a bad loss in any process skips the step in all: their gradients were averaged
            max_(self.opt_d.found_inf.copy_(~torch.isfinite(loss_d)), self.world)
        self.opt_d.step()
        with self.autocast:
            # G: fool D, stay close to the target
            self.D.requires_grad_(False)
            self.opt_g.zero_grad(set_to_none=True)
            logits = self.d_judge(torch.cat([real_a, fake_b], 1))
            loss_g, g_gan, g_l1 = generator_loss(self.gan, logits.float(), fake_b.float(), real_b, self.cfg.lambda_l1)
        loss_g.backward()
        if self.guard:
            max_(self.opt_g.found_inf.copy_(~torch.isfinite(loss_g)), self.world)
            bad = torch.maximum(self.opt_d.found_inf, self.opt_g.found_inf)
            total, run, longest = self.nonfinite.unbind()
            total.add_(bad)
            run.add_(bad).mul_(bad)  # consecutive bad steps; a good step resets it
            torch.maximum(longest, run, out=longest)
        self.opt_g.step()
        return torch.stack([g_gan, g_l1, d_real, d_fake]).detach()

    def check_finite(self) -> int:
        """Host read of the skipped-step counters; stops the run past train.max_nonfinite_steps in a row.
        Returns the total number of skipped steps so far."""
        total, _, longest = self.nonfinite.tolist()
        limit = self.cfg.train.max_nonfinite_steps
        if longest > limit:
            raise Pix2PixError(f"training stopped at step {self.steps}: {int(longest)} steps in a row had a NaN or "
                               f"infinite loss (train.max_nonfinite_steps is {limit}); lower optim.lr or check the "
                               "data. The last good checkpoint is kept; fix and re-run to resume from it")
        return int(total)

    @property
    def step_was_finite(self) -> torch.Tensor:
        """On the device: whether the last step was taken (not skipped for a non-finite loss)."""
        return self.nonfinite[1] == 0

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
            "epoch": self.epoch, "steps": self.steps, "nonfinite": self.nonfinite, "params": flatten(self.cfg),
        }

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        for name in ("opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])
        self.epoch, self.steps = state["epoch"], state["steps"]
        self.nonfinite.copy_(state["nonfinite"])


def train(cfg: Config, tiles_dir: str | Path, checkpoint_dir: str | Path, model_path: str | Path,
          metrics_dir: str | Path, best_model_path: str | Path | None = None) -> dict:
    """Train for cfg.epochs, resuming an unfinished run in checkpoint_dir; returns the last epoch's metrics.

    Under torchrun every process trains on its shard of each epoch; the main one alone reads and
    writes checkpoints and reports (see Reporter): a grid, metrics rows and MLflow metrics every
    epoch, checkpoint_dir/last.pt and the curves every train.checkpoint_every epochs, and at the end
    the final generator to model_path and the best epoch's to best_model_path.
    """
    world, device = join(cfg)
    try:
        return _train(cfg, world, device, Path(tiles_dir), Path(checkpoint_dir), model_path, Path(metrics_dir),
                      best_model_path)
    except RuntimeError as err:  # gloo and NCCL report a peer that stopped answering this way
        if world.size > 1 and "timed out" in str(err).lower():
            raise Pix2PixError(f"process {world.rank} waited more than train.dist_timeout_s={cfg.train.dist_timeout_s:g} s "
                               "for the others: one is stuck or gone (raise the timeout if validation on the "
                               "main process takes longer)") from None
        raise
    finally:
        leave(world)


def _train(cfg, world, device, tiles_dir, checkpoint_dir, model_path, metrics_dir, best_model_path) -> dict:
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if world.main:
        check_tracking_store(cfg)  # an unreachable MLflow server fails here, before any work
    torch.backends.cudnn.benchmark = device.type == "cuda"
    direction = direction_of(cfg)
    train_data = load_split(tiles_dir, "train", direction)
    val_data = load_split(tiles_dir, "val", direction) if world.main else None
    dataset_hash = pixels_hash(train_data, val_data) if world.main else ""
    if world.size == 1:  # resident for the whole run (several processes: train_epoch places each epoch's shard)
        train_data = place(train_data, device, cfg.train.device_data_gb)
    log.info("train %d pairs of %dx%d on %s (process %d of %d)", len(train_data), cfg.image_size, cfg.image_size,
             device, world.rank + 1, world.size)

    model = Pix2Pix(cfg, device, world=world)
    state = None
    if world.main:  # read on the main process, sent to the others (their machines may not have the file)
        state = checkpoints.for_resume(cfg, checkpoint_dir, dataset_hash, device if world.size == 1 else "cpu")
    state = from_main(state, world)
    if state:
        model.load_state_dict(state)
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if world.rank < len(rngs):
            checkpoints.set_rng_states(rngs[world.rank])
        else:  # more processes than the checkpoint was made with: a new stream for this one
            torch.manual_seed(cfg.seed + world.rank + 1000 * model.epoch)
    elif world.rank:
        torch.manual_seed(cfg.seed + world.rank)  # its own jitter and dropout draws
    jitter = PairJitter(cfg.image_size, cfg.augment.load_scale, cfg.augment.flip)
    reporter = Reporter(cfg, val_data.to(device), metrics_dir, checkpoint_dir, dataset_hash, state) if world.main else None
    row = reporter.last_row if reporter else {}
    try:
        for epoch in range(model.epoch, cfg.epochs):
            on_log = reporter.run.log_step_losses if reporter else None
            row = {"epoch": epoch + 1, "lr": model.lr, **train_epoch(model, jitter, train_data, cfg, on_log)}
            model.end_epoch()
            if reporter:
                reporter.epoch(model, row)
            if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                rngs = gather(checkpoints.rng_states(), world)  # every process's, to resume each exactly
                if reporter:
                    reporter.checkpoint(model, rngs)
        if reporter:
            reporter.finish(model, model_path, best_model_path)
    finally:
        if reporter:
            reporter.close()
    return row


def train_epoch(model: Pix2Pix, jitter: PairJitter, data: torch.Tensor, cfg: Config, on_log=None) -> dict:
    """One pass over this process's shard of `data` in a fresh random order; returns mean losses
    (over all processes) and images/s.

    Every `train.log_every` steps the losses are read from the device once: the progress bar shows
    the epoch's running means and `on_log(losses, step)` gets the means since the previous read.
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
    skipped_before = model.check_finite()
    start = time.perf_counter()
    model.G.train()
    model.D.train()
    with tqdm(total=epoch_images, desc=f"epoch {model.epoch + 1}/{cfg.epochs}", unit="img", leave=False,
              disable=not world.main) as bar:
        for step, batch in enumerate(batches(data, order, cfg.batch_size // world.size, device)):
            batch = jitter(batch)
            real_a, real_b = split_pair(batch.contiguous(memory_format=torch.channels_last))
            losses = model.step(real_a, real_b)
            taken = model.step_was_finite
            sums += torch.where(taken, losses, 0) * len(batch)
            counted += taken * len(batch)
            seen += len(batch) * world.size  # every process takes a batch of the same size
            bar.update(len(batch) * world.size)
            if step % cfg.train.log_every == 0:  # the only host sync in the loop
                model.check_finite()
                now = sum_(sums.clone(), world).cpu()  # a clone: on CPU .cpu() would alias sums
                bar.set_postfix({k: f"{v:.3f}" for k, v in zip(LOSS_NAMES, (now / seen).tolist())})
                if on_log:
                    on_log(dict(zip(LOSS_NAMES, ((now - read) / (seen - read_n)).tolist())), model.steps)
                read, read_n = now, seen
    seconds = time.perf_counter() - start
    skipped = model.check_finite() - skipped_before
    sum_(sums, world)
    sum_(counted, world)
    means = (sums / counted.clamp(min=1)).tolist()  # over the steps that were not skipped
    return {**dict(zip(LOSS_NAMES, means)), "images_per_s": epoch_images / seconds, "skipped_steps": skipped}
