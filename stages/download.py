"""DVC stage `download`: params -> data/raw/ (a built-in dataset, verified and extracted; for your own
folder, dataset: folder, only its SOURCE.json).

Usage (dvc.yaml): python -m stages.download PARAMS OUT_DIR
"""

import sys

from pix2pix.config import load_config
from pix2pix.data.download import fetch
from pix2pix.errors import exit_on_error


@exit_on_error
def main(params: str, out_dir: str) -> None:
    fetch(load_config(params), out_dir)


if __name__ == "__main__":
    main(*sys.argv[1:])
