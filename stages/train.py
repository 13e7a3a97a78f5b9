"""DVC stage `train`: tiles -> checkpoints/, models/generator{,_best}.pt, metrics/train*.{json,csv}, grids, curves."""

from pix2pix.config import load_config
from pix2pix.errors import exit_on_error
from pix2pix.trainer import train


@exit_on_error
def main() -> None:
    cfg = load_config("params.yaml")
    train(cfg, "data/tiles", "checkpoints", "models/generator.pt", "metrics", "models/generator_best.pt")


if __name__ == "__main__":
    main()
