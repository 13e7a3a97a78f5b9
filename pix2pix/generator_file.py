"""The saved generator: one format, written by training, read by evaluate, translate, export, the
MLflow model and the demo page.

models/generator.pt (also generator_best.pt and checkpoints/best.pt) is a dict of tensors and plain
values, read with weights_only (a file built to run code when loaded is refused): G's weights, the
epoch, and what is needed to rebuild G and feed it as its training tiles were made: image size,
dataset, direction, and `input` (its framing, data.fit; whether the input is a label map, resized
nearest; the palette that colours class ids). A training checkpoint (checkpoints/last.pt) holds the
same; `load` reads either.

The generator's shape options are models.GENERATOR_OPTIONS.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pix2pix import checkpoints
from pix2pix.config import Config
from pix2pix.errors import Pix2PixError
from pix2pix.models import GENERATOR_OPTIONS, UnetGenerator

HINT = "give models/generator.pt, a checkpoint, runs:/<id>/model or models:/<name>/<version>"


def describe(cfg: Config, recipe: dict) -> dict:
    """Everything a generator file holds besides the weights and the epoch: the params that shape G
    and how to feed it, from the tiles' recipe (tiles.Recipe.info) for the half `direction` feeds it."""
    half = "A" if cfg.task_direction == "AtoB" else "B"
    label = recipe["label_half"] == half
    return {"image_size": cfg.image_size, "direction": cfg.task_direction, "dataset": cfg.dataset,
            "model": {k: getattr(cfg.model, k) for k in GENERATOR_OPTIONS},
            "input": {"fit": recipe["fit"], "label": label, "palette": recipe["palette"] if label else None}}


def save(G: torch.nn.Module, epoch: int, description: dict, path: str | Path) -> None:
    checkpoints.save({"generator": G.state_dict(), "epoch": epoch, **description}, path)


def from_checkpoint(state: checkpoints.Checkpoint) -> dict:
    """A training checkpoint's generator in a generator file's shape."""
    return {"generator": state.training["generator"], "epoch": state.epoch, **state.generator}


def load(path: str | Path, device: torch.device | str = "cpu") -> tuple[UnetGenerator, dict]:
    """(G on `device`, its bundle) from a generator file or a training checkpoint."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if isinstance(state, dict) and "training" in state:
            state = from_checkpoint(checkpoints.Checkpoint.from_dict(state, path))
        G = UnetGenerator(3, 3, state["image_size"], **state["model"])
        G.load_state_dict(state["generator"])
        state["input"]["fit"]  # a file of this version says how to feed the model
    except FileNotFoundError:
        raise Pix2PixError(f"{path}: no such file; run `dvc repro` first to train it, or {HINT}") from None
    except Pix2PixError:
        raise
    except Exception:  # unpickling refused, truncated file, wrong keys: all the same to a user
        raise Pix2PixError(f"{path}: not a generator file of pix2pix-dvc (or of an older version); {HINT}") from None
    return G.to(device), state
