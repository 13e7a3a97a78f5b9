"""Where results go: DVC metrics/plots files, and an MLflow run.

mlflow is imported only when a run is tracked: it takes seconds to import, and `mlflow.enabled:
false` runs without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pix2pix.config import Config, flatten, load_config
from pix2pix.distributed import device_name
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path, write_json

log = logging.getLogger(__name__)


class EpochLog:
    """A JSON of the last epoch (metrics/train.json, a DVC metric) and a CSV of every epoch
    (metrics/train_epochs.csv, DVC plots).

    The JSON also holds `summary` values: the best epoch, the baseline, and what the numbers depend
    on (device, precision, torch, threads).
    """

    def __init__(self, json_path: str | Path, csv_path: str | Path, summary: dict | None = None,
                 rows: list[dict] | None = None):
        self.json_path, self.csv_path = Path(json_path), Path(csv_path)
        self.rows: list[dict] = list(rows or [])  # earlier epochs of a resumed run
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


def run_environment(device, precision: str) -> dict:
    """What a run's numbers also depend on (docs/reproducibility.md): the device, the precision it
    trained in, the torch build and the CPU threads torch uses. In metrics/train.json and as MLflow tags."""
    return {"device": device_name(device), "precision": precision, "torch_version": torch.__version__,
            "cpu_threads": torch.get_num_threads()}


def tracking_uri(cfg: Config | None) -> str:
    """$MLFLOW_TRACKING_URI, else the params' mlflow.tracking_uri; a relative local store
    (sqlite:///mlflow.db, mlruns) anchored at the project root.

    The root is $DVC_ROOT where DVC sets it: queued (`dvc queue start`) and `--temp` experiments
    run in temporary copies of the repo that are deleted afterwards, with their own store inside,
    and DVC points DVC_ROOT at the workspace they came from. Elsewhere it is the current folder.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (cfg or load_config(project_root() / "params.yaml")).mlflow.tracking_uri
    root = project_root()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # sqlite:////abs is absolute
        return "sqlite:///" + str(root / uri.removeprefix("sqlite:///"))
    if not urllib.parse.urlparse(uri).scheme and not Path(uri).is_absolute():  # a plain folder: mlruns
        return str(root / uri)
    return uri


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or ".").resolve()


def project_tracking_uri(params_file: str | Path = "params.yaml") -> str:
    """The store of the project whose params file this is, for tools outside a run (ui, translate)."""
    if not os.environ.get("MLFLOW_TRACKING_URI") and not Path(params_file).exists():
        raise Pix2PixError(f"{params_file}: no such file, so no MLflow store is named; run from the project folder "
                           "or set MLFLOW_TRACKING_URI")
    return tracking_uri(load_config(params_file) if Path(params_file).exists() else None)


def local_store(uri: str) -> Path | None:
    """The file (SQLite) or folder (file store) of a store on this machine; None for a server."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri.removeprefix("sqlite:///"))
    return Path(parsed.path) if parsed.scheme in ("", "file") else None


@contextlib.contextmanager
def store_lock(store: Path | None):
    """Serialise writers of one local store across processes (`dvc queue start -j N`): concurrent
    first use of a new SQLite file races on creating its tables, and a busy database refuses writes."""
    if store is None:
        yield
        return
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_tracking_store(cfg: Config) -> None:
    """Fail fast, before any work, when the MLflow tracking server does not answer."""
    uri = tracking_uri(cfg)
    if not cfg.mlflow.enabled or not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except (OSError, ValueError) as err:
        raise Pix2PixError(f"mlflow.tracking_uri {uri} does not answer ({getattr(err, 'reason', err)}); start the "
                           "server, fix the URI (or MLFLOW_TRACKING_URI), or set mlflow.enabled: false") from None


MODEL_MD5 = "model_md5"  # a run's tag: model_md5 of the generator file it made


def model_md5(path: str | Path) -> str:
    """DVC's hash of a model file (dvc.lock's md5): the key from a commit's model to its MLflow run."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def model_signature():
    """uint8 images (N, H, W, 3) of any size in and out; translate's mode and seed as params."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    images = Schema([TensorSpec(np.dtype("uint8"), (-1, -1, -1, 3))])
    return ModelSignature(inputs=images, outputs=images,
                          params=ParamSchema([ParamSpec("mode", "string", "paper"), ParamSpec("seed", "long", 0)]))


def requirements() -> list[str]:
    """What the model needs besides this package, as installed here (MLflow would load the model in
    a subprocess to guess them, and would pin this package, which is not on PyPI)."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("mlflow", "torch", "numpy", "pillow", "pyyaml", "pandas")]


class MlflowRun:
    """One MLflow run per training (the same run again when a training resumes); a no-op when
    `mlflow.enabled` is false. After the start, a failing store never stops training: each call
    that fails is skipped with a warning saying what was not logged (the DVC files have it all)."""

    def __init__(self, cfg: Config, tags: dict | None = None, run_id: str | None = None):
        self.mlflow, self.registered_model = None, cfg.mlflow.registered_model
        if not cfg.mlflow.enabled:
            return
        import mlflow

        uri = tracking_uri(cfg)
        self.store = local_store(uri)
        tags = {**git_tags(), "dataset": cfg.dataset, **(tags or {})}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
        with store_lock(self.store):
            mlflow.set_tracking_uri(uri)
            self._experiment(mlflow, cfg.mlflow.experiment, sqlite=uri.startswith("sqlite:"))
            self.run = self._start(mlflow, run_id)
            self.mlflow = mlflow
            if not run_id:
                mlflow.log_params(flatten(cfg))
            mlflow.set_tags(tags)
        log.info("MLflow run %s in %s", self.run.info.run_id, uri)

    def _experiment(self, mlflow, name: str, sqlite: bool) -> None:
        """Select the experiment, creating it with its artifacts beside a local store: MLflow would
        put them under the current folder, which for a queued experiment is deleted afterwards."""
        if sqlite and mlflow.get_experiment_by_name(name) is None:  # a folder store keeps artifacts inside itself
            mlflow.create_experiment(name, artifact_location=(self.store.parent / "mlruns" / name).as_uri())
        mlflow.set_experiment(name)

    @staticmethod
    def _start(mlflow, run_id: str | None):
        """The run, with MLflow's own system metrics (CPU, memory, disk, network; GPU where pynvml is
        installed) sampled in a thread of its own until the run ends."""
        if run_id:
            try:
                return mlflow.start_run(run_id=run_id, log_system_metrics=True)
            except Exception as err:  # not in this store (another URI, a deleted run)
                log.warning("cannot resume MLflow run %s (%s); starting a new run", run_id, err)
        return mlflow.start_run(log_system_metrics=True)

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.mlflow else None

    def _safe(self, what: str, call, *args, **kwargs) -> None:
        if not self.mlflow:
            return
        try:
            with store_lock(self.store):
                call(*args, **kwargs)
        except Exception as err:
            log.warning("MLflow store failed; %s not logged (%s: %s). Training goes on; metrics/ has it",
                        what, type(err).__name__, str(err)[:200])

    def log_metrics(self, metrics: dict, step: int) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self._safe(f"metrics of step {step}", lambda: self.mlflow.log_metrics(numbers, step=step))

    def log_step_losses(self, losses: dict, step: int) -> None:
        """Losses every `train.log_every` steps, as step_<name> against the optimisation step."""
        self.log_metrics({f"step_{k}": v for k, v in losses.items()}, step=step)

    def set_tags(self, tags: dict) -> None:
        self._safe(f"tags {', '.join(tags)}", lambda: self.mlflow.set_tags(tags))

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._safe(f"artifact {path}", lambda: self.mlflow.log_artifact(str(path), artifact_path=folder))

    def log_image(self, image, key: str, step: int) -> None:
        """A picture at a step: the MLflow UI shows a key's images with a slider over the steps."""
        self._safe(f"image {key} of step {step}", lambda: self.mlflow.log_image(image, key=key, step=step))

    def log_model(self, generator: str | Path, image_size: int) -> None:
        """The generator file as an MLflow model (mlflow_model.py), registered as a new version of
        mlflow.registered_model when that names one."""
        def log():
            self.mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
                                         artifacts={"generator": str(generator)}, signature=model_signature(),
                                         input_example=np.zeros((1, image_size, image_size, 3), np.uint8),
                                         pip_requirements=requirements(),
                                         registered_model_name=self.registered_model or None)

        self._safe("the model", log)

    def end(self) -> None:
        self._safe("the run's end", lambda: self.mlflow.end_run())
