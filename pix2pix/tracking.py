"""Where results go: DVC metrics/plots files, and an MLflow run (imported lazily).

The training core stays importable with torch + kornia alone; mlflow is imported only when a run
is actually tracked.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pandas as pd

from pix2pix.config import Config, flatten
from pix2pix.files import atomic_path, write_json

log = logging.getLogger(__name__)


class EpochLog:
    """metrics/<name>.json (last epoch, a DVC metric) and metrics/<name>_epochs.csv (DVC plots)."""

    def __init__(self, metrics_dir: str | Path, name: str = "train"):
        self.json_path = Path(metrics_dir) / f"{name}.json"
        self.csv_path = Path(metrics_dir) / f"{name}_epochs.csv"
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with atomic_path(self.csv_path) as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)
        write_json(self.json_path, row)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class MlflowRun:
    """One MLflow run per training; a no-op when `mlflow.enabled` is false."""

    def __init__(self, cfg: Config):
        self.mlflow = None
        if not cfg.mlflow.enabled:
            return
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.mlflow.tracking_uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(cfg.mlflow.experiment)
        self.run = mlflow.start_run()
        self.mlflow = mlflow
        mlflow.log_params(flatten(cfg))
        tags = {"git_commit": git_commit(), "dataset": cfg.dataset}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
        mlflow.set_tags(tags)
        log.info("MLflow run %s in %s", self.run.info.run_id, uri)

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.mlflow else None

    def log_metrics(self, metrics: dict, step: int) -> None:
        if self.mlflow:
            numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self.mlflow.log_metrics(numbers, step=step)

    def set_tags(self, tags: dict) -> None:
        if self.mlflow:
            self.mlflow.set_tags(tags)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.mlflow:
            self.mlflow.log_artifact(str(path), artifact_path=folder)

    def end(self) -> None:
        if self.mlflow:
            self.mlflow.end_run()
