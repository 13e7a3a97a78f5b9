"""pix2pix training: the paper's step (Pix2Pix.update) and the loop around it (train).

Per batch: paired jitter on the device, one D step, then one G step, in one process or in each of
several (DDP, see distributed.py). The machinery that runs the step fast and safely is engine.py;
the main process's per-epoch validation, grid, metrics and checkpoint are reporting.py's.

The hot loop never syncs with the host per step: losses accumulate on the device and are read
every `train.log_every` steps (for the progress bar) and at the end of each epoch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pix2pix import checkpoints, generator_file
from pix2pix.checkpoints import Checkpoint
from pix2pix.config import Config, flatten
from pix2pix.data.augment import PairJitter
from pix2pix.data.device_data import batches, load_split, pixels_hash, place, split_pair
from pix2pix.data.tiles import read_info
from pix2pix.distributed import World, configure, epoch_order, from_main, gather, join, leave, sum_
from pix2pix.engine import Engine
from pix2pix.errors import Pix2PixError
from pix2pix.losses import LOSS_NAMES, GANLoss, discriminator_loss, generator_loss
from pix2pix.reporting import Reporter, RunFiles, Silent
from pix2pix.tracking import check_tracking_store

log = logging.getLogger(__name__)


class Pix2Pix:
    """The model of the paper (Isola et al. 2017): a U-Net G against a conditional PatchGAN D, with
    loss_G = GAN + lambda_l1 * L1 (eq. 4), D's loss halved, and one Adam step each per batch. Where
    and how fast the passes run, and the skipping of non-finite steps, is the Engine's."""

    def __init__(self, cfg: Config, device: torch.device, world: World = World()):
        self.engine = Engine(cfg, device, world)
        self.gan, self.lambda_l1 = GANLoss(cfg.optim.gan_mode), cfg.lambda_l1

    def update(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """One D step then one G step; returns the detached losses [G_GAN, G_L1, D_real, D_fake]."""
        e = self.engine
        with e.guarded():
            fake_b = e.generate(real_a)
            # D: generated pairs -> 0, real pairs -> 1 (the fake detached: no gradient into G here), in
            # the reference's order, which its batch norms' running statistics follow
            fake_logits = e.discriminate(real_a, fake_b.detach())
            loss_d, d_real, d_fake = discriminator_loss(self.gan, e.discriminate(real_a, real_b), fake_logits)
            e.descend(e.opt_d, loss_d)
            # G: fool D, and stay close to the target
            loss_g, g_gan, g_l1 = generator_loss(self.gan, e.judge(real_a, fake_b), fake_b.float(), real_b,
                                                 self.lambda_l1)
            e.descend(e.opt_g, loss_g)
        return torch.stack([g_gan, g_l1, d_real, d_fake]).detach()

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        return self.engine.run(self.update, real_a, real_b)


@dataclass
class TrainingData:
    """The tiles a run trains and validates on."""

    train: torch.Tensor  # uint8 (N, 6, load size, load size), input | target
    val: torch.Tensor | None  # uint8 (N, 6, size, size) on the device; the main process only
    hash: str  # of the train and val pixels: a checkpoint resumes only on the same data
    generator: dict  # generator_file.describe: how the trained G is to be fed

    @classmethod
    def load(cls, cfg: Config, tiles_dir: Path, world: World, device: torch.device) -> TrainingData:
        train = load_split(tiles_dir, "train", cfg.task_direction, size=cfg.tile_size("train"))
        val = load_split(tiles_dir, "val", cfg.task_direction, size=cfg.image_size) if world.main else None
        digest = pixels_hash(train, val) if world.main else ""  # on the host, before they move
        if world.size == 1:  # resident for the whole run (several processes: train_epoch places each epoch's shard)
            train = place(train, device, cfg.train.device_data_gb)
        return cls(train, val.to(device) if val is not None else None, digest,
                   generator_file.describe(cfg, read_info(tiles_dir)))


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
    start_process(cfg, world, device)
    data = TrainingData.load(cfg, tiles_dir, world, device)
    log.info("train %d pairs of %dx%d on %s (process %d of %d)", len(data.train), cfg.image_size, cfg.image_size,
             device, world.rank + 1, world.size)
    model = Pix2Pix(cfg, device, world=world)
    state = resume(cfg, model, checkpoint_dir, data, world)
    reporter = Reporter(cfg, data, files, checkpoint_dir, state) if world.main else Silent()
    try:
        run_epochs(cfg, model, data, reporter, world)
        reporter.finish(model.engine, model_path, best_model_path)
    finally:
        reporter.close()
    return reporter.last_row


def start_process(cfg: Config, world: World, device: torch.device) -> None:
    """What each process sets before training: the seed (the same initial weights in every
    process), its threads, cuDNN; the main process checks the MLflow server, before any work."""
    torch.manual_seed(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if world.main:
        check_tracking_store(cfg)
    configure(device)


def resume(cfg: Config, model: Pix2Pix, checkpoint_dir: Path, data: TrainingData, world: World) -> Checkpoint | None:
    """The unfinished checkpoint to continue (read on the main process, sent to the others: their
    machines may not have the file), loaded into the model; and every process's random streams."""
    here = model.engine.device if world.size == 1 else "cpu"
    state = from_main(checkpoints.for_resume(cfg, checkpoint_dir, data.hash, here) if world.main else None, world)
    if state:
        model.engine.load_state_dict(state.training)
    checkpoints.seed_process(state, world.rank, cfg.seed)
    return state


def run_epochs(cfg: Config, model: Pix2Pix, data: TrainingData, reporter: Reporter | Silent, world: World) -> None:
    """The epochs still to train, each reported, with a checkpoint every train.checkpoint_every."""
    engine = model.engine
    jitter = PairJitter(cfg.image_size, cfg.augment.flip)
    # one bar for the whole run (its ETA is the run's), restarted where a resumed run stopped
    epoch_images = len(epoch_order(len(data.train), 0, cfg.seed, world)) * world.size
    bar = tqdm(total=cfg.epochs * epoch_images, initial=engine.epoch * epoch_images, unit="img",
               desc=f"epoch {engine.epoch + 1}/{cfg.epochs}", disable=not world.main)
    with bar, logging_redirect_tqdm():  # log lines print above the bar, not into it
        for epoch in range(engine.epoch, cfg.epochs):
            row = {"epoch": epoch + 1, "lr": engine.lr,
                   **train_epoch(model, jitter, data.train, cfg, reporter.log_step_losses, bar)}
            engine.end_epoch()
            reporter.epoch(engine, row)
            if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                rngs = gather(checkpoints.rng_states(), world)  # every process's, to resume each exactly
                reporter.checkpoint(Checkpoint(engine.state_dict(), rngs, flatten(cfg), data.hash, data.generator,
                                               reporter.state()))


def train_epoch(model: Pix2Pix, jitter: PairJitter, data: torch.Tensor, cfg: Config, on_log=lambda losses, step: None,
                bar: tqdm | None = None) -> dict:
    """One pass over this process's shard of `data` in a fresh random order; returns mean losses
    (over all processes) and images/s.

    Every `train.log_every` steps the losses are read from the device once: the progress bar (the
    run's, or one for this epoch) shows the epoch's running means and `on_log(losses, step)` gets
    the means since the previous read.
    """
    engine = model.engine
    world, device = engine.world, engine.device
    order = epoch_order(len(data), engine.epoch, cfg.seed, world)
    if world.size > 1:  # this process's shard goes to its device for the epoch
        data, order = place(data[order], device, cfg.train.device_data_gb), torch.arange(len(order))
    order = order.to(data.device)
    epoch_images = len(order) * world.size
    sums = torch.zeros(len(LOSS_NAMES), device=device)
    counted = torch.zeros((), device=device)  # images of the steps taken (not skipped as non-finite)
    read, read_n, seen = torch.zeros(len(LOSS_NAMES)), 0, 0  # sums and images at the previous read; images so far
    skipped_before = engine.guard.check(engine.steps)
    start = time.perf_counter()
    engine.G.train()
    engine.D.train()
    desc = f"epoch {engine.epoch + 1}/{cfg.epochs}"
    own = bar is None
    if own:
        bar = tqdm(total=epoch_images, unit="img", leave=False, disable=not world.main)
    bar.set_description(desc)
    with bar if own else contextlib.nullcontext():
        for step, batch in enumerate(batches(data, order, cfg.batch_size // world.size, device)):
            batch = jitter(batch)
            real_a, real_b = split_pair(batch.contiguous(memory_format=engine.layout))
            losses = model.step(real_a, real_b)
            taken = engine.guard.taken
            sums += torch.where(taken, losses, 0) * len(batch)
            counted += taken * len(batch)
            seen += len(batch) * world.size  # every process takes a batch of the same size
            bar.update(len(batch) * world.size)
            if step % cfg.train.log_every == 0:  # the only host sync in the loop
                engine.guard.check(engine.steps)
                now = sum_(sums.clone(), world).cpu()  # a clone: on CPU .cpu() would alias sums
                bar.set_postfix({k: f"{v:.3f}" for k, v in zip(LOSS_NAMES, (now / seen).tolist())})
                on_log(dict(zip(LOSS_NAMES, ((now - read) / (seen - read_n)).tolist())), engine.steps)
                read, read_n = now, seen
    seconds = time.perf_counter() - start
    skipped = engine.guard.check(engine.steps) - skipped_before
    sum_(sums, world)
    sum_(counted, world)
    means = (sums / counted.clamp(min=1)).tolist()  # over the steps that were not skipped
    return {**dict(zip(LOSS_NAMES, means)), "images_per_s": epoch_images / seconds, "skipped_steps": skipped}
