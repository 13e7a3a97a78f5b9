"""DVC stage `prepare`: data/raw/<dataset>/ -> data/tiles/{train,val,test}/*.png + manifest.csv."""

from pix2pix.config import load_config
from pix2pix.data.tiles import build_tiles
from pix2pix.errors import exit_on_error


@exit_on_error
def main() -> None:
    cfg = load_config("params.yaml")
    manifest = build_tiles(f"data/raw/{cfg.dataset}", "data/tiles", cfg)
    print(manifest["split"].value_counts().to_string())


if __name__ == "__main__":
    main()
