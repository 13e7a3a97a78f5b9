"""Fetch a dataset into data/raw/<dataset>/ (verified, extracted, immutable)."""

from __future__ import annotations

import logging
from pathlib import Path

from pix2pix.data import synthetic
from pix2pix.data.sources import DATASETS
from pix2pix.errors import Pix2PixError

log = logging.getLogger(__name__)


def fetch(cfg, out_dir: str | Path) -> Path:
    """Materialise `cfg.dataset` under `out_dir`; return the folder."""
    source = DATASETS.get(cfg.dataset)
    if source is None:
        raise Pix2PixError(f"dataset '{cfg.dataset}' is unknown; pick one of {', '.join(DATASETS)}")
    out_dir = Path(out_dir)
    if source.name == "synthetic":
        log.info("generating %d synthetic car pairs (seed %d)", cfg.data.synthetic_count, cfg.seed)
        synthetic.write_dataset(out_dir, cfg.data.synthetic_count, cfg.seed)
        return out_dir
    raise Pix2PixError(f"dataset '{source.name}' has no download method yet")
