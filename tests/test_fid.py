"""FID: clean-fid's pipeline with the offline TF-Inception port (no internet needed)."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from conftest import SHARED_DATA
from pix2pix import fid
from pix2pix.data import synthetic
from pix2pix.errors import Pix2PixError
from pix2pix.files import folder_hash

COUNT = 16


@pytest.fixture(scope="module")
def extractor():
    return fid.build_extractor("offline", "cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """COUNT real photos: facade photos from the offline mirror, else rendered synthetic cars."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(COUNT):
        if SHARED_DATA.is_dir():
            tile = Image.open(SHARED_DATA / "facades" / "val" / f"{i + 1}.jpg").convert("RGB")
            image = tile.crop((0, 0, tile.width // 2, tile.height))  # the photo half
        else:
            image = Image.fromarray(synthetic.sample(0, i)[0])
        image.save(folder / f"{i:03d}.png")
    return folder


def degraded(src, dest, blur):
    dest.mkdir()
    for path in sorted(src.iterdir()):
        Image.open(path).filter(ImageFilter.GaussianBlur(blur)).save(dest / path.name)
    return dest


def folder_fid(generated, reference, extractor) -> tuple[float, str]:
    """FID between two image folders with fid.py's own pieces: (value, extractor name)."""
    from cleanfid.fid import frechet_distance

    model, name = extractor
    mu, sigma = fid.statistics(fid.folder_features(generated, model))
    ref_mu, ref_sigma = fid.statistics(fid.folder_features(reference, model))
    return float(frechet_distance(mu, sigma, ref_mu, ref_sigma)), name


def test_fid_of_a_set_against_itself_is_zero(photos, extractor):
    value, name = folder_fid(photos, photos, extractor)
    assert name == "offline"
    assert abs(value) < 1e-3


def test_fid_grows_with_blur(photos, extractor, tmp_path):
    values = [folder_fid(degraded(photos, tmp_path / f"blur{b}", b), photos, extractor)[0] for b in (1, 2, 4)]
    assert values[0] < values[1] < values[2], values
    assert values[0] > 1.0


def test_fid_equals_cleanfid_compute_fid_with_the_same_extractor(photos, extractor, tmp_path):
    from cleanfid.fid import compute_fid

    other = degraded(photos, tmp_path / "other", 2)
    ours, _ = folder_fid(other, photos, extractor)
    theirs = compute_fid(str(other), str(photos), mode="clean", custom_feat_extractor=extractor[0],
                         num_workers=0, batch_size=32, device=torch.device("cpu"), verbose=False)
    assert ours == pytest.approx(theirs, abs=1e-3)


def test_reference_statistics_are_cached_by_content(photos, extractor, tmp_path):
    cache = tmp_path / "cache"
    first = fid.reference_statistics(photos, extractor[0], extractor[1], cache)
    assert len(list(cache.iterdir())) == 1
    second = fid.reference_statistics(photos, extractor[0], extractor[1], cache)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in sorted(photos.iterdir())[:-1]:
        (changed / path.name).write_bytes(path.read_bytes())
    assert folder_hash(changed) != folder_hash(photos)


def test_auto_uses_the_offline_port_when_clean_fid_weights_are_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2PIX_CACHE", str(tmp_path))
    assert not fid.cleanfid_weights_present()
    assert fid.build_extractor("auto")[1] == "offline"
    with pytest.raises(Pix2PixError, match="allowed: auto, clean-fid, offline"):
        fid.build_extractor("inception")


def as_tensor(folder) -> torch.Tensor:
    """The images of a folder as one float batch in [-1, 1]."""
    images = [torch.from_numpy(np.asarray(Image.open(p))).permute(2, 0, 1) for p in sorted(folder.iterdir())]
    return torch.stack(images).float() / 127.5 - 1


def test_scorer_on_tensors_matches_fid_on_folders(photos, tmp_path):
    images = as_tensor(photos)
    scorer = fid.FidScorer(images, "offline", cache_dir=tmp_path / "cache")
    try:
        assert abs(scorer(images)) < 1e-3
        blurred = degraded(photos, tmp_path / "blurred", 2)
        expected, _ = folder_fid(blurred, photos, (scorer.model, scorer.name))
        assert scorer(as_tensor(blurred)) == pytest.approx(expected, abs=1e-3)
    finally:
        scorer.close()
    assert not scorer.workdir.exists()


def test_fid_of_a_single_image_is_skipped_not_a_hang():
    one = torch.zeros(1, 3, 32, 32)
    scorer = fid.FidScorer(one, "offline")
    try:
        assert scorer(one) is None
        assert scorer(torch.zeros(3, 3, 32, 32)) is None  # the reference side has one image
    finally:
        scorer.close()
