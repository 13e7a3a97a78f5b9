"""DVC stage `train`: tiles -> checkpoints/, models/generator{,_best}.pt, metrics/train*.{json,csv}, grids, curves.

Usage (dvc.yaml): python -m stages.train PARAMS TILES_DIR CHECKPOINT_DIR MODEL BEST_MODEL METRICS EPOCHS GRIDS CURVES
With train.nproc_per_node x train.nnodes > 1 it starts itself again under torchrun, once per process
(as dvc.yaml runs it, `-m`: this checkout's code).
"""

import sys
from pathlib import Path

from pix2pix.config import load_config, processes
from pix2pix.distributed import launch, under_torchrun
from pix2pix.errors import exit_on_error
from pix2pix.reporting import RunFiles
from pix2pix.trainer import train


@exit_on_error
def main(params: str, tiles_dir: str, checkpoint_dir: str, model: str, best_model: str, *reports: str) -> None:
    cfg = load_config(params)
    if processes(cfg) > 1 and not under_torchrun():
        launch(cfg, "-m", "stages.train", params, tiles_dir, checkpoint_dir, model, best_model, *reports)
    else:
        train(cfg, tiles_dir, checkpoint_dir, model, best_model, RunFiles(*map(Path, reports)))


if __name__ == "__main__":
    main(*sys.argv[1:])
