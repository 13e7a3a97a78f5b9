"""DVC stage `evaluate`: final and best generators on the test tiles -> metrics/eval.json, eval_grid{,_best}.png."""

from pix2pix.config import load_config
from pix2pix.errors import exit_on_error
from pix2pix.evaluation import evaluate


@exit_on_error
def main() -> None:
    cfg = load_config("params.yaml")
    print(evaluate(cfg, "models/generator.pt", "data/tiles", "metrics", "models/generator_best.pt"))


if __name__ == "__main__":
    main()
