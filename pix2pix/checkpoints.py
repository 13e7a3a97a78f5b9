"""Checkpoints that let a killed training resume exactly where it stopped.

checkpoint_dir/last.pt holds a `Checkpoint`: everything the next epoch depends on. A new one is
written in full before the current last.pt becomes previous.pt, so a checkpoint found truncated or
corrupt on resume falls back to the one before it, and a failed write changes nothing.
checkpoint_dir/best.pt is the best epoch's generator file. The folder is the train stage's working
state, not a DVC output: DVC neither deletes it before a run (so a killed run resumes) nor caches it.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pix2pix.config import Config, result_params
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """What a checkpoint holds, and the one place that names it. The trainer contributes the
    training state, the random streams and the data; the reporter what the run has reported."""

    training: dict  # Pix2Pix.state_dict(): G, D, optimisers, LR schedules, epoch, steps, NaN counters
    rng: list[dict]  # every process's random streams (rng_states), in rank order
    params: dict  # config.flatten of the params the run was made with
    dataset_hash: str  # sha256 of the train and val tiles' pixels (device_data.pixels_hash)
    generator: dict  # generator_file.describe: what a generator file holds besides the weights
    report: dict  # Reporter.state(): the metric rows so far, the best epoch, the MLflow run id

    @property
    def epoch(self) -> int:
        return self.training["epoch"]

    @property
    def finished(self) -> bool:
        return self.epoch >= self.params["epochs"]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, state, path) -> Checkpoint:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [k for k in names if k not in state] if isinstance(state, dict) else names
        if missing:
            raise Pix2PixError(f"{path}: not a training checkpoint of this version (missing {', '.join(missing)})")
        return cls(**{k: state[k] for k in names})


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


def seed_process(state: Checkpoint | None, rank: int, seed: int) -> None:
    """This process's random streams (jitter, dropout) after the common torch.manual_seed(seed):
    the checkpoint's when it holds this process's; otherwise a stream of its own, so that
    processes never draw the same numbers."""
    if state and rank < len(state.rng):
        set_rng_states(state.rng[rank])
    elif state:  # more processes than the checkpoint was made with
        torch.manual_seed(seed + rank + 1000 * state.epoch)
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


def save_last(state: Checkpoint, checkpoint_dir: str | Path) -> None:
    """Write next.pt completely, then rotate: last.pt -> previous.pt, next.pt -> last.pt."""
    folder = Path(checkpoint_dir)
    save(state.to_dict(), folder / "next.pt")
    if (folder / "last.pt").exists():
        os.replace(folder / "last.pt", folder / "previous.pt")
    os.replace(folder / "next.pt", folder / "last.pt")


def read(path: Path, device: torch.device) -> Checkpoint:
    """A checkpoint, loaded without executing code (weights_only); Pix2PixError if unusable."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle that wants to run code
        raise Pix2PixError(f"{path}: unreadable checkpoint ({type(err).__name__}: {str(err)[:200]})") from None
    return Checkpoint.from_dict(state, path)


def latest(checkpoint_dir: str | Path, device: torch.device) -> Checkpoint | None:
    """last.pt, or previous.pt (with a warning) when last.pt cannot be read; None when neither can."""
    for name in ("last.pt", "previous.pt"):
        path = Path(checkpoint_dir) / name
        if path.exists():
            try:
                return read(path, device)
            except Pix2PixError as err:
                log.warning("%s; trying the one before it", err)
    return None


def for_resume(cfg: Config, checkpoint_dir: str | Path, dataset_hash: str, device: torch.device) -> Checkpoint | None:
    """The checkpoint to resume from, or None to start fresh (clearing checkpoint_dir).

    An unfinished checkpoint made with other training params or data is refused, not resumed:
    train.resume: never starts fresh instead.
    """
    state = latest(checkpoint_dir, device) if cfg.train.resume == "auto" else None
    if state is not None and state.finished:
        log.info("%s holds a finished run; starting a new one", checkpoint_dir)
        state = None
    if state is not None:
        where = f"{checkpoint_dir} (stopped at epoch {state.epoch}/{state.params['epochs']})"
        fix = "set train.resume: never to start afresh, or restore the old value to resume"
        now, then = result_params(cfg), result_params(state.params)
        changed = [k for k in now if now[k] != then.get(k)]
        if changed:
            k = changed[0]
            raise Pix2PixError(f"{where} was trained with {k}={then.get(k)!r}, params.yaml now has {now[k]!r}; {fix}")
        if state.dataset_hash != dataset_hash:
            raise Pix2PixError(f"{where} was trained on other tiles than data/tiles holds now; {fix}")
        log.info("resuming %s", where)
        return state
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return None
