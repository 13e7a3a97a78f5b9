"""FID: clean-fid's pipeline with the offline TF-Inception port (no internet needed)."""

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from conftest import SHARED_DATA, mirror_or_synthetic
from pix2pix import fid
from pix2pix.data import synthetic
from pix2pix.errors import Pix2PixError

COUNT = 16


@pytest.fixture(scope="module")
def extractor():
    return fid.build_extractor("offline", "cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """COUNT real photos: facade photos from the offline mirror, else rendered synthetic cars (the
    tests that use them are marked `mirror`: CI runs them both ways)."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(COUNT):
        if SHARED_DATA.is_dir():
            tile = Image.open(SHARED_DATA / "facades" / "val" / f"{i + 1}.jpg").convert("RGB")
            image = tile.crop((0, 0, tile.width // 2, tile.height))  # the photo half
        else:  # one size, as the facade photos have (the tests stack a folder into one batch)
            image = Image.fromarray(synthetic.sample(0, i)[0]).resize((256, 256), Image.BICUBIC)
        image.save(folder / f"{i:03d}.png")
    return folder


def degraded(src, dest, blur):
    dest.mkdir()
    for path in sorted(src.iterdir()):
        Image.open(path).filter(ImageFilter.GaussianBlur(blur)).save(dest / path.name)
    return dest


@pytest.fixture(scope="module")
def blurred(photos, tmp_path_factory):
    """The photos blurred (radius 2): the generated side of the comparisons with clean-fid."""
    return degraded(photos, tmp_path_factory.mktemp("blurred") / "blur2", 2)


def as_tensor(files) -> torch.Tensor:
    """A folder's images (or a list of files) as one float batch in [-1, 1]."""
    paths = sorted(files.iterdir()) if isinstance(files, Path) else files
    images = [torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in paths]
    return torch.stack(images).float() / 127.5 - 1


@functools.cache  # a folder's features in a mode are computed once per module: the network is slow on a CPU
def folder_features(folder, network, mode: str = "clean") -> np.ndarray:
    """fid.features of a folder's images, one at a time (their sizes may differ)."""
    return np.concatenate([fid.features(as_tensor([path]), network, mode) for path in sorted(folder.iterdir())])


def folder_fid(generated, reference, extractor, mode: str = "clean") -> float:
    """FID between two image folders with fid.py's own pieces, on tensors."""
    network, _ = extractor
    return fid.frechet(*(folder_features(folder, network, mode) for folder in (generated, reference)))


@mirror_or_synthetic
def test_fid_of_a_set_against_itself_is_zero(photos, extractor):
    assert extractor[1] == "offline"
    assert abs(folder_fid(photos, photos, extractor)) < 1e-3


@mirror_or_synthetic
def test_fid_grows_with_blur(photos, blurred, extractor, tmp_path):
    folders = [degraded(photos, tmp_path / "blur1", 1), blurred, degraded(photos, tmp_path / "blur4", 4)]
    values = [folder_fid(folder, photos, extractor) for folder in folders]
    assert values[0] < values[1] < values[2], values
    assert values[0] > 1.0


# pytorch-fid's InceptionV3 as clean-fid's legacy_pytorch mode calls it: model(x / 255), normalised
# inside to 2 x - 1; clean-fid's TorchScript model normalises (x - 128) / 128 inside.
NORMALISE = {"clean": lambda x: (x - 128) / 128, "legacy_pytorch": lambda x: x / 255 * 2 - 1}


@mirror_or_synthetic
@pytest.mark.parametrize("mode", fid.MODES)
def test_fid_on_tensors_equals_clean_fids_compute_fid_on_png_folders(photos, blurred, extractor, mode):
    """Each mode against clean-fid's whole pipeline on files (its loading, its resize for the mode,
    its sqrtm Frechet distance), given the same network."""
    from cleanfid.fid import compute_fid

    network, _ = extractor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy: singular matrix, deprecated argument
        theirs = compute_fid(str(blurred), str(photos), mode=mode, custom_feat_extractor=lambda x: network(
            NORMALISE[mode](x)), num_workers=0, batch_size=COUNT, device=torch.device("cpu"), verbose=False,
            use_dataparallel=False)
    assert folder_fid(blurred, photos, extractor, mode) == pytest.approx(theirs, abs=1e-3)
    assert abs(theirs - folder_fid(blurred, photos, extractor, next(m for m in fid.MODES if m != mode))) > 0.1


# Measured once with the offline network (torch 2.14.1, CPU) on 16 rendered synthetic cars and the
# same cars blurred (radius 2): they pin the network, clean-fid's resize and the Frechet distance
# to the values this project's FID was checked with, whatever clean-fid's functions do later.
PINNED_FEATURES_0 = [0.16701167821884155, 0.0, 0.11020472645759583, 0.17977988719940186]
PINNED_MEAN_FEATURE = (0.30617464, 0.31791288)  # sharp, blurred
PINNED_FID = 153.5188817102201


def test_the_offline_network_gives_the_pinned_features_and_fid(extractor, tmp_path):
    sharp, blurred = tmp_path / "sharp", tmp_path / "blurred"
    sharp.mkdir()
    for i in range(16):
        Image.fromarray(synthetic.sample(0, i)[0]).save(sharp / f"{i:03d}.png")
    degraded(sharp, blurred, 2)
    features = [folder_features(folder, extractor[0]) for folder in (sharp, blurred)]
    assert features[0].shape == (16, 2048)
    np.testing.assert_allclose(features[0][0, :4], PINNED_FEATURES_0, atol=1e-4)
    np.testing.assert_allclose([f.mean() for f in features], PINNED_MEAN_FEATURE, atol=1e-5)
    assert folder_fid(blurred, sharp, extractor) == pytest.approx(PINNED_FID, rel=1e-3)


@mirror_or_synthetic
def test_reference_features_are_cached_by_pixels_network_and_mode(photos, extractor, tmp_path, monkeypatch):
    cache, extractions, real = tmp_path / "cache", [], fid.features

    def counted(images, *args, **kwargs):
        extractions.append(len(images))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(fid, "features", counted)
    images, (network, name) = as_tensor(photos), extractor
    first = fid.reference_features(images, network, name, "clean", cache)
    assert len(list(cache.iterdir())) == 1 and len(extractions) == 1
    second = fid.reference_features(images, network, name, "clean", cache)
    assert len(extractions) == 1  # read from the cache: the network did not run again
    assert np.array_equal(first, second)
    fid.reference_features(images[:-1], network, name, "clean", cache)
    assert len(extractions) == 2 and len(list(cache.iterdir())) == 2  # other pixels: computed, cached apart
    legacy = fid.reference_features(images, network, name, "legacy_pytorch", cache)
    assert len(extractions) == 3 and len(list(cache.iterdir())) == 3 and not np.allclose(legacy, first)


@pytest.mark.parametrize("n1,n2,d", [(3, 4, 256), (16, 16, 256), (100, 106, 2048), (40, 30, 8)])
def test_frechet_equals_clean_fids_frechet_distance(n1, n2, d):
    """The low-rank trace (fewer images than features) and the full-rank path (d=8) against
    clean-fid's own sqrtm-based formula on the covariances. Inception's 2048 features once (a
    test set's 100 and 106 images); the smaller sets at 256, as scipy's sqrtm of a 2048x2048
    product is slow and one of 256 is not."""
    from cleanfid.fid import frechet_distance

    rng = np.random.default_rng(n1)
    f1, f2 = np.abs(rng.normal(0.3, 0.3, (n1, d))), np.abs(rng.normal(0.35, 0.3, (n2, d)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy: singular matrix, deprecated argument
        theirs = frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert fid.frechet(f1, f2) == pytest.approx(theirs, rel=1e-5, abs=1e-3)


def test_auto_uses_the_offline_port_when_clean_fid_weights_are_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2PIX_CACHE", str(tmp_path))
    assert not fid.cleanfid_weights_present()
    assert fid.build_extractor("auto")[1] == "offline"
    with pytest.raises(Pix2PixError, match="allowed: auto, clean-fid, offline"):
        fid.build_extractor("inception")


@mirror_or_synthetic
def test_scorer_gives_each_mode_as_fid_on_folders_and_kid_beside(photos, blurred, extractor, tmp_path):
    images = as_tensor(photos)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 16 images: singular covariances, TorchScript, yet no warning for users
        scorer = fid.FidScorer(images, "offline", "cpu", tmp_path / "cache", fid.MODES)
        same = scorer(images)
    assert abs(same["FID"]) < 1e-3 and abs(same["FID_legacy_pytorch"]) < 1e-3
    got = scorer(as_tensor(blurred))
    assert set(got) == {"FID", "FID_legacy_pytorch", "KID", "KID_std"}
    expected = {m: folder_fid(blurred, photos, extractor, m) for m in fid.MODES}  # the same network, loaded apart
    assert (got["FID"], got["FID_legacy_pytorch"]) == pytest.approx((expected["clean"], expected["legacy_pytorch"]), abs=1e-3)
    network = extractor[0]
    assert (got["KID"], got["KID_std"]) == pytest.approx(fid.kid(folder_features(blurred, network), folder_features(photos, network)),
                                                         rel=1e-6)
    assert abs(same["KID"]) < 3 * same["KID_std"] < got["KID"]  # a set against itself: 0 within its spread


def test_kid_is_clean_fids_kernel_distance_with_its_spread_and_leaves_numpys_random_state_alone():
    from cleanfid.fid import kernel_distance

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(0.3, 0.3, (20, 64)), rng.normal(0.4, 0.3, (24, 64))
    state = np.random.get_state()
    ours, spread = fid.kid(f1, f2, subsets=50, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state))  # training's numpy stream
    np.random.seed(7)  # clean-fid draws its subsets from numpy's global generator: the same draws
    assert ours == pytest.approx(kernel_distance(f1, f2, num_subsets=50, max_subset_size=10), rel=1e-12)
    assert spread > 0  # subsets of half the smaller set differ from each other


def test_fid_of_a_single_image_is_skipped_not_a_hang(tmp_path):
    one = torch.zeros(1, 3, 32, 32)
    scorer = fid.FidScorer(one, "offline", "cpu", tmp_path / "cache")
    assert scorer(one) == {}
    assert scorer(torch.zeros(3, 3, 32, 32)) == {}  # the reference side has one image
