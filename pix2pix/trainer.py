"""The training loop: paired jitter on the device, one D step then one G step per batch,
per-epoch validation, comparison grid, checkpoint and metrics.

The hot loop never syncs with the host per step: losses accumulate on the device and are read
every `train.log_every` steps (for the progress bar) and at the end of each epoch.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from pix2pix import checkpoints
from pix2pix.config import Config, flatten
from pix2pix.curves import save_curves
from pix2pix.data.augment import PairJitter
from pix2pix.data.sources import direction_of
from pix2pix.data.device_data import batches, load_split, pick_device, pixels_hash, place, split_pair, to_unit
from pix2pix.evaluation import generate, image_metrics, save_grid
from pix2pix.fid import FidScorer
from pix2pix.graphs import GraphedStep
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path, cache_dir
from pix2pix.losses import GANLoss, discriminator_loss, generator_loss
from pix2pix.models import build_discriminator, build_generator
from pix2pix.tracking import EpochLog, MlflowRun, check_tracking_store, device_tags

log = logging.getLogger(__name__)
LOSS_NAMES = ("G_GAN", "G_L1", "D_real", "D_fake")


def linear_decay(epochs: int, decay_epochs: int):
    """LR factor for epoch e (0-based): 1 for the first epochs - decay_epochs, then linear to ~0.

    Same rule as the reference code: 1 - max(0, e + 1 - n_constant) / (decay_epochs + 1).
    """
    constant = epochs - decay_epochs
    return lambda e: 1.0 - max(0, e + 1 - constant) / float(decay_epochs + 1)


class Pix2Pix:
    """Generator, discriminator, their optimisers and schedules: everything a checkpoint holds.

    fast=False gives the classic setup (fp32, NCHW, per-tensor Adam) for the benchmark's reference.
    """

    def __init__(self, cfg: Config, device: torch.device, fast: bool = True):
        self.cfg, self.device = cfg, device
        layout = torch.channels_last if fast else torch.contiguous_format
        self.G = build_generator(cfg).to(device, memory_format=layout)
        self.D = build_discriminator(cfg).to(device, memory_format=layout)
        self.gan = GANLoss(cfg.optim.gan_mode)
        # torch.compile: the forward/backward of G and D become fused kernels after a warm-up of the
        # first steps; self.G / self.D stay the plain modules (state dicts, generation, export)
        self.g_fwd = torch.compile(self.G) if cfg.train.compile else self.G
        self.d_fwd = torch.compile(self.D) if cfg.train.compile else self.D
        cuda = fast and device.type == "cuda"
        self.graphs = cuda and cfg.train.cuda_graphs
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
        rule = linear_decay(cfg.epochs, o.decay_epochs)
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
        if self.guard:
            self.opt_d.found_inf.copy_(~torch.isfinite(loss_d))
        self.opt_d.step()
        with self.autocast:
            # G: fool D, stay close to the target
            self.D.requires_grad_(False)
            self.opt_g.zero_grad(set_to_none=True)
            logits = self.d_fwd(torch.cat([real_a, fake_b], 1))
            loss_g, g_gan, g_l1 = generator_loss(self.gan, logits.float(), fake_b.float(), real_b, self.cfg.lambda_l1)
        loss_g.backward()
        if self.guard:
            self.opt_g.found_inf.copy_(~torch.isfinite(loss_g))
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


def generator_bundle(model: Pix2Pix, epoch: int) -> dict:
    """What inference needs: weights and the few params that shape the network."""
    cfg = model.cfg
    return {
        "generator": model.G.state_dict(), "epoch": epoch,
        "image_size": cfg.image_size, "direction": direction_of(cfg), "dataset": cfg.dataset,
        "model": {"ngf": cfg.model.ngf, "norm": cfg.model.norm, "dropout": cfg.model.dropout},
    }


def better(row: dict, best: dict | None) -> bool:
    """The best epoch has the lowest val FID (val L1 when FID is unavailable)."""
    key = "val_FID" if row.get("val_FID") is not None else "val_L1"
    return best is None or row[key] < best.get(key, float("inf"))


def train(cfg: Config, tiles_dir: str | Path, checkpoint_dir: str | Path, model_path: str | Path,
          metrics_dir: str | Path, best_model_path: str | Path | None = None) -> dict:
    """Train for cfg.epochs, resuming an unfinished run in checkpoint_dir; returns the last epoch's metrics.

    Writes, every epoch: a grid, metrics rows, MLflow metrics; every train.checkpoint_every epochs:
    checkpoint_dir/last.pt and the curves image; at the end the final generator to model_path and
    the best epoch's to best_model_path.
    """
    torch.manual_seed(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_tracking_store(cfg)  # an unreachable MLflow server fails here, before any work
    device = pick_device(cfg.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    direction = direction_of(cfg)
    train_data, val_data = (load_split(tiles_dir, split, direction) for split in ("train", "val"))
    dataset_hash = pixels_hash(train_data, val_data)
    train_data = place(train_data, device, cfg.train.device_data_gb)
    val_data = val_data.to(device)  # small, and generated from every epoch
    log.info("train %d, val %d pairs of %dx%d on %s", len(train_data), len(val_data), cfg.image_size, cfg.image_size, device)

    model = Pix2Pix(cfg, device)
    grids, curves = Path(metrics_dir) / "grids", Path(metrics_dir) / "curves.png"
    state = checkpoints.for_resume(cfg, checkpoint_dir, dataset_hash, device)
    if state:
        model.load_state_dict(state)
        checkpoints.set_rng_states(state["rng"])
    else:
        shutil.rmtree(grids, ignore_errors=True)  # a persisted output: stale grids of an older run go
    jitter = PairJitter(cfg.image_size, cfg.augment.load_scale, cfg.augment.flip)
    scorer = FidScorer(split_pair(to_unit(val_data))[1], cfg.eval.fid_extractor, device, cache_dir("fid"))
    run = MlflowRun(cfg, {"fid_extractor": scorer.name, "dataset_hash": dataset_hash, **device_tags(device)},
                    run_id=state["mlflow_run_id"] if state else None)
    epochs_log = EpochLog(metrics_dir, rows=state["rows"] if state else [],
                          summary={"mlflow_run_id": run.run_id} if run.run_id else {})
    best: dict | None = state["best"] if state else None
    best_path = Path(checkpoint_dir) / "best.pt"
    row: dict = epochs_log.rows[-1] if epochs_log.rows else {}
    try:
        for epoch in range(model.epoch, cfg.epochs):
            row = {"epoch": epoch + 1, "lr": model.lr, **train_epoch(model, jitter, train_data, cfg, run.log_step_losses)}
            inputs, outputs, targets = generate(model.G, val_data, cfg.eval.generator_mode)
            row.update({f"val_{k}": v for k, v in image_metrics(outputs, targets).items()})
            if (val_fid := scorer(outputs)) is not None:
                row.update(val_FID=val_fid, fid_extractor=scorer.name)
            model.end_epoch()
            if better(row, best):
                best = row
                checkpoints.save(generator_bundle(model, epoch=epoch + 1), best_path)
            grid_path = grids / f"epoch_{epoch + 1:03d}.png"
            n = cfg.eval.grid_samples
            save_grid(inputs[:n], outputs[:n], targets[:n], grid_path, f"epoch {epoch + 1}/{cfg.epochs}  val")
            epochs_log.add(row, best_epoch=best["epoch"])
            run.log_metrics(row, step=epoch + 1)
            run.log_artifact(grid_path, "grids")
            if (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
                checkpoints.save_last({**model.state_dict(), "rng": checkpoints.rng_states(), "rows": epochs_log.rows,
                                       "best": best, "dataset_hash": dataset_hash, "mlflow_run_id": run.run_id},
                                      checkpoint_dir)
                save_curves(epochs_log.rows, curves, f"{cfg.dataset}, lambda_l1={cfg.lambda_l1:g}")
                run.log_artifact(curves)
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        checkpoints.save(generator_bundle(model, epoch=model.epoch), model_path)
        if best_model_path:
            with atomic_path(best_model_path) as tmp:
                shutil.copyfile(best_path, tmp)
        run.log_generator(model.G)
    finally:
        scorer.close()
        run.end()
    return row


def train_epoch(model: Pix2Pix, jitter: PairJitter, data: torch.Tensor, cfg: Config, on_log=None) -> dict:
    """One pass over `data` in a fresh random order; returns mean losses and images/s.

    Every `train.log_every` steps the losses are read from the device once: the progress bar shows
    the epoch's running means and `on_log(losses, step)` gets the means since the previous read.
    """
    n, device = len(data), model.device
    order = torch.randperm(n, device=data.device)
    sums = torch.zeros(len(LOSS_NAMES), device=device)
    counted = torch.zeros((), device=device)  # images of the steps with finite losses
    read, read_n = torch.zeros(len(LOSS_NAMES)), 0  # sums and image count at the previous read
    skipped_before = model.check_finite()
    start = time.perf_counter()
    model.G.train()
    model.D.train()
    with tqdm(total=n, desc=f"epoch {model.epoch + 1}/{cfg.epochs}", unit="img", leave=False) as bar:
        for step, batch in enumerate(batches(data, order, cfg.batch_size, device)):
            batch = jitter(batch)
            real_a, real_b = split_pair(batch.contiguous(memory_format=torch.channels_last))
            losses = model.step(real_a, real_b)
            finite = torch.isfinite(losses).all()
            sums += torch.where(finite, losses, 0) * len(batch)
            counted += finite * len(batch)
            bar.update(len(batch))
            if step % cfg.train.log_every == 0:  # the only host sync in the loop
                model.check_finite()
                now = sums.to("cpu", copy=True)  # a copy: on CPU .cpu() would alias sums
                bar.set_postfix({k: f"{v:.3f}" for k, v in zip(LOSS_NAMES, (now / bar.n).tolist())})
                if on_log:
                    on_log(dict(zip(LOSS_NAMES, ((now - read) / (bar.n - read_n)).tolist())), model.steps)
                read, read_n = now, bar.n
    seconds = time.perf_counter() - start
    skipped = model.check_finite() - skipped_before
    means = (sums / counted.clamp(min=1)).tolist()  # over the steps that were not skipped
    return {**dict(zip(LOSS_NAMES, means)), "images_per_s": n / seconds, "skipped_steps": skipped}
