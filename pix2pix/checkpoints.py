"""Checkpoints that let a killed training resume exactly where it stopped.

checkpoint_dir/last.pt holds everything the next epoch depends on: G, D, both optimisers and LR
schedules, every RNG state (torch, CUDA, numpy, python), epoch and step counts, the rows of the
metrics log, the best epoch so far, the MLflow run id, and the params and data it was made with.
A new one is written in full before the current last.pt becomes previous.pt, so a checkpoint found
truncated or corrupt on resume falls back to the one before it, and a failed write changes nothing. checkpoint_dir/best.pt is the best epoch's
generator. The DVC train stage declares checkpoint_dir `persist: true` so that these survive to the
next `dvc repro`.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from pix2pix.config import Config, result_params
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path

log = logging.getLogger(__name__)
REQUIRED = ("generator", "discriminator", "opt_g", "opt_d", "sched_g", "sched_d", "epoch", "steps", "rng",
            "params", "dataset_hash", "rows", "best", "mlflow_run_id")


def rng_states() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), pos, has_gauss, cached],  # plain types: loadable with weights_only
        "python": random.getstate(),
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])


def seed_process(state: dict | None, rank: int, seed: int) -> None:
    """This process's random streams (jitter, dropout) after the common torch.manual_seed(seed):
    the checkpoint's when it holds this process's; otherwise a stream of its own, so that
    processes never draw the same numbers."""
    if state and rank < len(state["rng"]):
        set_rng_states(state["rng"][rank])
    elif state:  # more processes than the checkpoint was made with
        torch.manual_seed(seed + rank + 1000 * state["epoch"])
    elif rank:
        torch.manual_seed(seed + rank)


def save(obj, path: str | Path) -> None:
    """torch.save through a temp file + fsync + rename; a failed write leaves `path` as it was.

    Saved through a file object: given a path, torch.save names the archive's root folder after the
    (here random) temp file, and the same weights would get different bytes and DVC hashes."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError):
            reason = err.strerror or str(err)
            hint = "free disk space" if err.errno in (errno.ENOSPC, errno.EFBIG) else "check the folder is writable"
        elif write_failed(err):
            reason, hint = "the write stopped short: the disk is full or the file is over a size limit", "free disk space"
        else:
            raise
        raise Pix2PixError(f"{path}: could not write the checkpoint ({reason}); {hint}. "
                           "The previous checkpoint is intact; re-run to resume from it") from None


def write_failed(err: RuntimeError) -> bool:
    """Whether torch.save's archive writer failed to write: a full disk or a file size limit reaches
    it as a short write, which it reports as a RuntimeError, not an OSError."""
    return any(s in str(err) for s in ("PytorchStreamWriter", "inline_container", "unexpected pos", "file write failed"))


def save_last(state: dict, checkpoint_dir: str | Path) -> None:
    """Write next.pt completely, then rotate: last.pt -> previous.pt, next.pt -> last.pt."""
    folder = Path(checkpoint_dir)
    save(state, folder / "next.pt")
    if (folder / "last.pt").exists():
        os.replace(folder / "last.pt", folder / "previous.pt")
    os.replace(folder / "next.pt", folder / "last.pt")


def read(path: Path, device: torch.device) -> dict:
    """A checkpoint, loaded without executing code (weights_only); Pix2PixError if unusable."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle that wants to run code
        raise Pix2PixError(f"{path}: unreadable checkpoint ({type(err).__name__}: {str(err)[:200]})") from None
    missing = [k for k in REQUIRED if k not in state] if isinstance(state, dict) else list(REQUIRED)
    if not missing and not isinstance(state["rng"], list):  # an older format: one RNG state, not one per process
        missing = ["the RNG states per process"]
    if missing:
        raise Pix2PixError(f"{path}: not a training checkpoint of this version (missing {', '.join(missing)})")
    return state


def latest(checkpoint_dir: str | Path, device: torch.device) -> dict | None:
    """last.pt, or previous.pt (with a warning) when last.pt cannot be read; None when neither can."""
    for name in ("last.pt", "previous.pt"):
        path = Path(checkpoint_dir) / name
        if path.exists():
            try:
                return read(path, device)
            except Pix2PixError as err:
                log.warning("%s; trying the one before it", err)
    return None


def for_resume(cfg: Config, checkpoint_dir: str | Path, dataset_hash: str, device: torch.device) -> dict | None:
    """The checkpoint to resume from, or None to start fresh (clearing checkpoint_dir).

    An unfinished checkpoint made with other training params or data is refused, not resumed:
    train.resume: never starts fresh instead.
    """
    state = latest(checkpoint_dir, device) if cfg.train.resume == "auto" else None
    if state is not None and state["epoch"] >= state["params"]["epochs"]:
        log.info("%s holds a finished run; starting a new one", checkpoint_dir)
        state = None
    if state is not None:
        where = f"{checkpoint_dir} (stopped at epoch {state['epoch']}/{state['params']['epochs']})"
        fix = "set train.resume: never to start afresh, or restore the old value to resume"
        now, then = result_params(cfg), result_params(state["params"])
        changed = [k for k in now if now[k] != then.get(k)]
        if changed:
            k = changed[0]
            raise Pix2PixError(f"{where} was trained with {k}={then.get(k)!r}, params.yaml now has {now[k]!r}; {fix}")
        if state["dataset_hash"] != dataset_hash:
            raise Pix2PixError(f"{where} was trained on other tiles than data/tiles holds now; {fix}")
        log.info("resuming %s", where)
        return state
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return None
