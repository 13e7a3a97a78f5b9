"""What the main training process does around the steps: per-epoch validation (L1, PSNR, SSIM,
FID), the best epoch, the comparison grid, metrics rows and MLflow; the checkpoint and the curves
every train.checkpoint_every epochs; the final and best generators at the end.

Only the main process (rank 0) reports, so a run on N processes writes the same files as a run on one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from pix2pix import checkpoints
from pix2pix.config import Config
from pix2pix.curves import save_curves
from pix2pix.data.device_data import split_pair, to_unit
from pix2pix.data.sources import direction_of
from pix2pix.evaluation import generate, image_metrics, save_grid
from pix2pix.fid import FidScorer
from pix2pix.files import atomic_path, cache_dir
from pix2pix.tracking import EpochLog, MlflowRun, run_environment

log = logging.getLogger(__name__)


def generator_bundle(model, epoch: int) -> dict:
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


class Reporter:
    def __init__(self, cfg: Config, val_data: torch.Tensor, metrics_dir: Path, checkpoint_dir: Path,
                 dataset_hash: str, state: dict | None):
        self.cfg, self.val_data, self.dataset_hash = cfg, val_data, dataset_hash
        self.checkpoint_dir, self.grids, self.curves = checkpoint_dir, metrics_dir / "grids", metrics_dir / "curves.png"
        self.best_path = checkpoint_dir / "best.pt"
        if not state:
            shutil.rmtree(self.grids, ignore_errors=True)  # a persisted output: stale grids of an older run go
        device = val_data.device
        self.scorer = FidScorer(split_pair(to_unit(val_data))[1], cfg.eval.fid_extractor, device, cache_dir("fid"))
        environment = run_environment(device)
        self.run = MlflowRun(cfg, {"fid_extractor": self.scorer.name, "dataset_hash": dataset_hash, **environment},
                             run_id=state["mlflow_run_id"] if state else None)
        self.log = EpochLog(metrics_dir, rows=state["rows"] if state else [],
                            summary={**environment, "mlflow_run_id": self.run.run_id} if self.run.run_id else environment)
        self.best: dict | None = state["best"] if state else None
        self.last_row: dict = self.log.rows[-1] if self.log.rows else {}

    def epoch(self, model, row: dict) -> None:
        """Validate the epoch's generator, keep it if best, write the grid and log the row."""
        cfg, n = self.cfg, self.cfg.eval.grid_samples
        inputs, outputs, targets = generate(model.generator(), self.val_data, cfg.eval.generator_mode)
        row.update({f"val_{k}": v for k, v in image_metrics(outputs, targets).items()})
        if (val_fid := self.scorer(outputs)) is not None:
            row.update(val_FID=val_fid, fid_extractor=self.scorer.name)
        if better(row, self.best):
            self.best = row
            checkpoints.save(generator_bundle(model, epoch=row["epoch"]), self.best_path)
        grid_path = self.grids / f"epoch_{row['epoch']:03d}.png"
        save_grid(inputs[:n], outputs[:n], targets[:n], grid_path, f"epoch {row['epoch']}/{cfg.epochs}  val")
        self.log.add(row, best_epoch=self.best["epoch"])
        self.run.log_metrics(row, step=row["epoch"])
        self.run.log_artifact(grid_path, "grids")
        self.last_row = row
        log.info("epoch %d: %s", row["epoch"], ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))

    def checkpoint(self, model, rngs: list[dict]) -> None:
        """checkpoint_dir/last.pt (with every process's RNG states) and the curves image."""
        checkpoints.save_last({**model.state_dict(), "rng": rngs, "rows": self.log.rows, "best": self.best,
                               "dataset_hash": self.dataset_hash, "mlflow_run_id": self.run.run_id},
                              self.checkpoint_dir)
        save_curves(self.log.rows, self.curves, f"{self.cfg.dataset}, lambda_l1={self.cfg.lambda_l1:g}")
        self.run.log_artifact(self.curves)

    def finish(self, model, model_path, best_model_path) -> None:
        checkpoints.save(generator_bundle(model, epoch=model.epoch), model_path)
        if best_model_path:
            with atomic_path(best_model_path) as tmp:
                shutil.copyfile(self.best_path, tmp)
        self.run.log_generator(model.generator())

    def close(self) -> None:
        self.scorer.close()
        self.run.end()
