"""DVC stage `evaluate`: final and best generators on the test tiles -> metrics/eval.json, eval_grid{,_best}.png.

Usage (dvc.yaml): python -m stages.evaluate PARAMS MODEL BEST_MODEL TILES_DIR METRICS GRID BEST_GRID
"""

import sys

from pix2pix.config import load_config
from pix2pix.errors import exit_on_error
from pix2pix.evaluation import evaluate


@exit_on_error
def main(params: str, model: str, best_model: str, tiles_dir: str, metrics: str, grid: str, best_grid: str) -> None:
    print(evaluate(load_config(params), model, best_model, tiles_dir, metrics, grid, best_grid))


if __name__ == "__main__":
    main(*sys.argv[1:])
