"""DVC stage `train`: tiles -> checkpoints/, models/generator{,_best}.pt, metrics/train*.{json,csv}, grids, curves.

With train.nproc_per_node x train.nnodes > 1 it starts itself again under torchrun, once per process.
"""

from pix2pix.config import load_config
from pix2pix.distributed import launch, processes, under_torchrun
from pix2pix.errors import exit_on_error
from pix2pix.trainer import train


@exit_on_error
def main() -> None:
    cfg = load_config("params.yaml")
    if processes(cfg) > 1 and not under_torchrun():
        launch(cfg, "-m", "stages.train")  # as dvc.yaml runs it: this checkout's code
    else:
        train(cfg, "data/tiles", "checkpoints", "models/generator.pt", "metrics", "models/generator_best.pt")


if __name__ == "__main__":
    main()
