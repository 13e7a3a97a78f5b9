"""pix2pix-dvc: reproducible pix2pix (Isola et al. 2017) driven by DVC."""

__version__ = "0.1.0"
