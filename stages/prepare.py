"""DVC stage `prepare`: data.path (data/raw, or your own folder) -> data/tiles/{train,val,test}/*.png,
manifest.csv and info.json.

Usage (dvc.yaml): python -m stages.prepare PARAMS RAW_DIR TILES_DIR
"""

import sys

from pix2pix.config import load_config
from pix2pix.data.tiles import build_tiles
from pix2pix.errors import exit_on_error


@exit_on_error
def main(params: str, raw_dir: str, tiles_dir: str) -> None:
    manifest = build_tiles(raw_dir, tiles_dir, load_config(params))
    print(manifest["split"].value_counts().to_string())


if __name__ == "__main__":
    main(*sys.argv[1:])
