"""What the main training process does around the steps: per-epoch validation (L1, PSNR, SSIM,
FID), the best epoch, the comparison grid, metrics rows and MLflow; the checkpoint and the curves
every train.checkpoint_every epochs; the final and best generators at the end.

Only the main process (rank 0) reports, so a run on N processes writes the same files as a run on
one; the others get a Silent reporter.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path


from pix2pix import checkpoints, generator_file
from pix2pix.checkpoints import Checkpoint
from pix2pix.config import Config, training_precision
from pix2pix.curves import save_curves
from pix2pix.evaluation import fid_scorer, mean_image_l1, mean_target, score, split_size
from pix2pix.files import atomic_path
from pix2pix.grids import comparison, evolution, save
from pix2pix.tracking import MODEL_MD5, EpochLog, MlflowRun, model_md5, run_environment

log = logging.getLogger(__name__)


def better(row: dict, best: dict | None) -> bool:
    """The best epoch has the lowest val FID (val L1 when FID is unavailable)."""
    key = "val_FID" if row.get("val_FID") is not None else "val_L1"
    return best is None or row[key] < best.get(key, float("inf"))


@dataclass(frozen=True)
class RunFiles:
    """Where a training reports; dvc.yaml's train stage names each (--metrics metrics/train.json ...)."""

    metrics: Path  # the last epoch's row and the run's summary (JSON, a DVC metric)
    epochs: Path  # every epoch's row (CSV, DVC plots)
    grids: Path  # a folder: epoch_NNN.png per epoch
    curves: Path  # the losses and validation curves (PNG)
    evolution: Path  # the fixed val samples over the epochs (PNG)


TIMINGS = ("images_per_s",)  # MLflow and the log only: metrics/ holds what a re-run reproduces


class Reporter:
    """The main process's reports. `data` is the run's trainer.TrainingData; `state` the checkpoint
    a resumed run continues (its rows, best epoch and MLflow run)."""

    def __init__(self, cfg: Config, data, files: RunFiles, checkpoint_dir: Path, state: Checkpoint | None):
        self.cfg, self.val_data, self.description = cfg, data.val, data.generator
        self.checkpoint_dir, self.files, self.grids = checkpoint_dir, files, files.grids
        self.best_path = checkpoint_dir / "best.pt"
        report = state.report if state else {"rows": [], "best": None, "mlflow_run_id": None}
        if not state:
            shutil.rmtree(self.grids, ignore_errors=True)  # a persisted output: stale grids of an older run go
        device = self.val_data.device
        self.scorer = fid_scorer(self.val_data, cfg.eval.fid_extractor, device)
        environment = run_environment(device, training_precision(cfg, device.type))
        self.run = MlflowRun(cfg, {"fid_extractor": self.scorer.name, "dataset_hash": data.hash, **environment},
                             run_id=report["mlflow_run_id"])
        baseline = mean_image_l1(mean_target(data.train, cfg.image_size), self.val_data, "val")
        self.run.log_metrics(baseline, step=0)
        self.log = EpochLog(files.metrics, files.epochs, rows=report["rows"],
                            summary={**environment, **baseline, **split_size(self.val_data, "val", self.scorer)})
        self.best: dict | None = report["best"]
        self.last_row: dict = self.log.rows[-1] if self.log.rows else {}

    def epoch(self, engine, row: dict) -> None:
        """Validate the epoch's generator, keep it if best, write the grid and log the row."""
        metrics, images = score(engine.generator(), self.val_data, self.cfg.eval.generator_mode, self.scorer, "val",
                                self.cfg.seed)
        row.update(metrics)
        kept = {k: v for k, v in row.items() if k not in TIMINGS}
        if better(kept, self.best):
            self.best = kept
            generator_file.save(engine.G, row["epoch"], self.description, self.best_path)
        grid = comparison(images, self.cfg.eval.grid_samples, f"epoch {row['epoch']}/{self.cfg.epochs}  val")
        save(grid, self.grids / f"epoch_{row['epoch']:03d}.png")
        self.log.add(kept, best_epoch=self.best["epoch"])
        self.run.log_metrics(row, step=row["epoch"])
        self.run.log_image(grid, "val_grid", step=row["epoch"])
        self.last_row = kept
        log.info("epoch %d: %s", row["epoch"], ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))

    def log_step_losses(self, losses: dict, step: int) -> None:
        self.run.log_step_losses(losses, step)

    def state(self) -> dict:
        """The reporting part of a checkpoint: what a resumed run continues."""
        return {"rows": self.log.rows, "best": self.best, "mlflow_run_id": self.run.run_id}

    def checkpoint(self, state: Checkpoint) -> None:
        checkpoints.save_last(state, self.checkpoint_dir)

    def finish(self, engine, model_path, best_model_path) -> None:
        """The final generator (also to MLflow as a model: runs:/<id>/model), the best one, and the
        pictures drawn once, at the end (while a run trains, MLflow and `dvc plots` show its curves
        and grids): the curves and the val samples' evolution over the epochs."""
        save_curves(self.log.rows, self.files.curves, f"{self.cfg.dataset}, lambda_l1={self.cfg.lambda_l1:g}")
        grids = {int(p.stem.split("_")[1]): p for p in self.grids.glob("epoch_*.png")}
        save(evolution(grids, self.cfg.image_size), self.files.evolution)
        for picture in (self.files.curves, self.files.evolution):
            self.run.log_artifact(picture)
        generator_file.save(engine.G, engine.epoch, self.description, model_path)
        with atomic_path(best_model_path) as tmp:
            shutil.copyfile(self.best_path, tmp)
        # DVC's hash of the model file (dvc.lock's md5): the key from a commit's model to its run
        self.run.set_tags({MODEL_MD5: model_md5(model_path)})
        self.run.log_model(model_path, self.cfg.image_size)

    def close(self) -> None:
        self.run.end()


class Silent:
    """The reporter of the processes that do not report (all but the main one)."""

    def __init__(self):
        self.last_row: dict = {}

    def log_step_losses(self, losses: dict, step: int) -> None: ...
    def epoch(self, engine, row: dict) -> None: ...
    def state(self) -> dict: return {}
    def checkpoint(self, state: Checkpoint) -> None: ...
    def finish(self, engine, model_path, best_model_path) -> None: ...
    def close(self) -> None: ...
