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
    """metrics/<name>.json (last epoch, a DVC metric) and metrics/<name>_epochs.csv (DVC plots).

    The JSON also holds `summary` values (the MLflow run id, the best epoch) that join DVC's record
    of a run to MLflow's.
    """

    def __init__(self, metrics_dir: str | Path, name: str = "train", summary: dict | None = None):
        self.json_path = Path(metrics_dir) / f"{name}.json"
        self.csv_path = Path(metrics_dir) / f"{name}_epochs.csv"
        self.rows: list[dict] = []
        self.summary = dict(summary or {})

    def add(self, row: dict, **summary) -> None:
        self.rows.append(row)
        self.summary.update(summary)
        with atomic_path(self.csv_path) as tmp:
            pd.DataFrame(self.rows).to_csv(tmp, index=False)
        write_json(self.json_path, {**row, **self.summary})


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def git_tags() -> dict:
    """The commit, and whether the working tree differs from it (tracked files only)."""
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown", "git_dirty": "unknown" if dirty is None else str(bool(dirty)).lower()}


def device_tags(device) -> dict:
    import torch

    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    return {"device": name, "torch_version": torch.__version__}


def tracking_uri(cfg: Config | None) -> str:
    """$MLFLOW_TRACKING_URI, else the params' mlflow.tracking_uri, else MLflow's own default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (cfg.mlflow.tracking_uri if cfg else "sqlite:///mlflow.db")


class MlflowRun:
    """One MLflow run per training; a no-op when `mlflow.enabled` is false."""

    def __init__(self, cfg: Config, tags: dict | None = None):
        self.mlflow = None
        if not cfg.mlflow.enabled:
            return
        import mlflow

        uri = tracking_uri(cfg)
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(cfg.mlflow.experiment)
        self.run = mlflow.start_run()
        self.mlflow = mlflow
        mlflow.log_params(flatten(cfg))
        tags = {**git_tags(), "dataset": cfg.dataset, **(tags or {})}
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

    def log_step_losses(self, losses: dict, step: int) -> None:
        """Losses every `train.log_every` steps, as step_<name> against the optimisation step."""
        self.log_metrics({f"step_{k}": v for k, v in losses.items()}, step=step)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.mlflow:
            self.mlflow.log_artifact(str(path), artifact_path=folder)

    def log_generator(self, G) -> None:
        """The final generator as an MLflow model: mlflow.pytorch.load_model("runs:/<id>/model")."""
        if self.mlflow:
            import copy

            import mlflow.pytorch

            # a CPU copy loads anywhere; loading needs the pix2pix package importable
            mlflow.pytorch.log_model(copy.deepcopy(G).cpu(), name="model", pip_requirements=["torch"],
                                    serialization_format="pickle")

    def end(self) -> None:
        if self.mlflow:
            self.mlflow.end_run()
