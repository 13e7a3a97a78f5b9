"""DVC stage `download`: params -> data/raw/<dataset>/ (verified, extracted)."""

from pix2pix.config import load_config
from pix2pix.data.download import fetch
from pix2pix.errors import exit_on_error


@exit_on_error
def main() -> None:
    cfg = load_config("params.yaml")
    fetch(cfg, f"data/raw/{cfg.dataset}")


if __name__ == "__main__":
    main()
