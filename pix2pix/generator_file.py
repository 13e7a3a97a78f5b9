"""The saved generator: one format, written by training, read by evaluate, translate and export.

models/generator.pt (also generator_best.pt and checkpoints/best.pt) is a dict of tensors and plain
values, read with weights_only (a file built to run code when loaded is refused): G's weights, the
epoch, and the params needed to rebuild and apply it. A training checkpoint (checkpoints/last.pt)
holds the same weights with its params flat; `load` reads either. MLflow runs keep this same file
as an artifact (reporting.Reporter.finish).

The generator's shape options are models.GENERATOR_OPTIONS.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pix2pix import checkpoints
from pix2pix.config import Config
from pix2pix.data.sources import direction_of
from pix2pix.errors import Pix2PixError
from pix2pix.models import GENERATOR_OPTIONS, UnetGenerator

HINT = "give models/generator.pt, a checkpoint or runs:/<id>/model"


def bundle(G: torch.nn.Module, cfg: Config, epoch: int) -> dict:
    """What inference needs: weights and the few params that shape and feed the network."""
    return {
        "generator": G.state_dict(), "epoch": epoch,
        "image_size": cfg.image_size, "direction": direction_of(cfg.dataset, cfg.direction), "dataset": cfg.dataset,
        "model": {k: getattr(cfg.model, k) for k in GENERATOR_OPTIONS},
    }


def save(G: torch.nn.Module, cfg: Config, epoch: int, path: str | Path) -> None:
    checkpoints.save(bundle(G, cfg, epoch), path)


def from_checkpoint(state: dict) -> dict:
    """A training checkpoint's generator in the bundle's shape."""
    p = state["params"]
    return {"generator": state["generator"], "epoch": state["epoch"], "image_size": p["image_size"],
            "direction": direction_of(p["dataset"], p["direction"]), "dataset": p["dataset"], "model": {k: p[f"model.{k}"] for k in GENERATOR_OPTIONS}}


def load(path: str | Path, device: torch.device | str = "cpu") -> tuple[UnetGenerator, dict]:
    """(G on `device`, its bundle) from a generator file or a training checkpoint."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if isinstance(state, dict) and "params" in state:
            state = from_checkpoint(state)
        G = UnetGenerator(3, 3, state["image_size"], **state["model"])
        G.load_state_dict(state["generator"])
    except FileNotFoundError:
        raise Pix2PixError(f"{path}: no such file; run `dvc repro` first to train it, or {HINT}") from None
    except Exception as err:  # unpickling refused, truncated file, wrong keys: all the same to a user
        raise Pix2PixError(f"{path}: not a generator saved by pix2pix train ({type(err).__name__}: "
                           f"{str(err)[:200]}); {HINT}") from None
    return G.to(device), state
