"""DVC stage `train`: tiles -> checkpoints/, models/generator{,_best}.pt, metrics/train*.{json,csv}, grids, pictures.

Usage (dvc.yaml): python -m stages.train PARAMS TILES_DIR CHECKPOINT_DIR MODEL BEST_MODEL --metrics JSON
    --epochs CSV --grids DIR --curves PNG --evolution PNG   (reporting.RunFiles: each report by name)
With train.nproc_per_node x train.nnodes > 1 it starts itself again under torchrun, once per process
(as dvc.yaml runs it, `-m`: this checkout's code).
"""

import dataclasses
import sys
from pathlib import Path

from pix2pix.config import load_config, processes
from pix2pix.distributed import launch, under_torchrun
from pix2pix.errors import Pix2PixError, exit_on_error
from pix2pix.reporting import RunFiles
from pix2pix.trainer import train


def run_files(options: list[str]) -> RunFiles:
    names = [f"--{f.name}" for f in dataclasses.fields(RunFiles)]
    given = dict(zip(options[::2], options[1::2]))
    if sorted(given) != sorted(names) or len(options) != 2 * len(names):
        raise Pix2PixError(f"train stage: give each of {' '.join(names)} once, with a path (dvc.yaml's cmd)")
    return RunFiles(**{name.removeprefix("--"): Path(path) for name, path in given.items()})


@exit_on_error
def main(params: str, tiles_dir: str, checkpoint_dir: str, model: str, best_model: str, *reports: str) -> None:
    files = run_files(list(reports))
    cfg = load_config(params)
    if processes(cfg) > 1 and not under_torchrun():
        launch(cfg, "-m", "stages.train", params, tiles_dir, checkpoint_dir, model, best_model, *reports)
    else:
        train(cfg, tiles_dir, checkpoint_dir, model, best_model, files)


if __name__ == "__main__":
    main(*sys.argv[1:])
