"""The download stage against a real HTTP server on loopback, the mirror, and hostile archives."""

import dataclasses
import http.server
import re
import tarfile
import threading
from pathlib import Path

import numpy as np

import pytest
from PIL import Image

from archives import (ADE_OUTDOOR, CAR, ROAD, ade20k_zip, car_zip_entries, small_facades, tar_bytes,
                      write_cityscapes_zips, write_mirror, zip_bytes)
from conftest import ROOT, SHARED_DATA, mirror_or_synthetic, needs_shared, tiny_overrides
from pix2pix.config import load_config
from pix2pix.data import download
from pix2pix.data.palettes import PALETTES
from pix2pix.data.sources import DATASETS
from pix2pix.data.tiles import build_tiles
from pix2pix.errors import Pix2PixError


class Server(http.server.ThreadingHTTPServer):
    """Serves `files` {path: bytes}; honours Range; `truncate` cuts every body short."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.truncate, self.ranges = {}, False, []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if rng := self.headers.get("Range"):
            self.server.ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        self.wfile.write(payload[: len(payload) // 2] if self.server.truncate else payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PIX2PIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PIX2PIX_MIRROR", raising=False)
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    return tmp_path


def serve_as(monkeypatch, server, name, body, **changes):
    """Point dataset `name` at the local server, serving `body` as its archive."""
    source = DATASETS[name]
    server.files["/" + source.archives[0]] = body
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(source, urls=(server.url + "/" + source.archives[0],), **changes))


def cfg_for(name, **extra):
    return load_config(ROOT / "params.yaml", tiny_overrides(dataset=name, **{"mlflow.enabled": False}, **extra))


@mirror_or_synthetic
def test_facades_download_extract_and_tile(server, env, monkeypatch):
    serve_as(monkeypatch, server, "facades", tar_bytes(small_facades()))
    cfg = cfg_for("facades")
    raw = download.fetch(cfg, env / "raw")
    assert (raw / "SOURCE.json").exists()
    manifest = build_tiles(raw, env / "tiles", cfg)
    assert manifest["split"].value_counts().to_dict() == {"train": 3, "val": 3, "test": 3}
    tile = Image.open(env / "tiles" / manifest["tile"][0])
    assert tile.size == (128, 64)


@mirror_or_synthetic
def test_download_resumes_a_partial_file(server, env, monkeypatch):
    body = tar_bytes(small_facades())
    serve_as(monkeypatch, server, "facades", body)
    part = env / "cache" / "facades.tar.gz.part"
    part.parent.mkdir(parents=True)
    half = len(body) // 2
    part.write_bytes(body[:half])
    download.fetch(cfg_for("facades"), env / "raw")
    assert server.ranges == [f"bytes={half}-"]
    assert (env / "cache" / "facades.tar.gz").read_bytes() == body


@mirror_or_synthetic
def test_truncated_download_fails_cleanly_and_names_the_url(server, env, monkeypatch):
    serve_as(monkeypatch, server, "facades", tar_bytes(small_facades()))
    server.truncate = True
    with pytest.raises(Pix2PixError, match=r"facades.tar.gz: truncated.*PIX2PIX_MIRROR"):
        download.fetch(cfg_for("facades"), env / "raw")
    assert not (env / "raw").exists()


def test_unreachable_url_says_how_to_use_a_mirror(env, monkeypatch):
    monkeypatch.setitem(DATASETS, "maps", dataclasses.replace(DATASETS["maps"], urls=("http://127.0.0.1:9/maps.tar.gz",)))
    with pytest.raises(Pix2PixError, match=r"127.0.0.1:9/maps.tar.gz.*set PIX2PIX_MIRROR.*dataset: synthetic"):
        download.fetch(cfg_for("maps"), env / "raw")


@mirror_or_synthetic
def test_checksum_mismatch_is_refused_and_the_file_deleted(server, env, monkeypatch):
    serve_as(monkeypatch, server, "facades", tar_bytes(small_facades()), sha256="0" * 64)
    with pytest.raises(Pix2PixError, match="does not match the pinned"):
        download.fetch(cfg_for("facades"), env / "raw")
    assert not (env / "raw").exists() and not (env / "cache" / "facades.tar.gz").exists()


SYM, HARD, FIFO, CHR = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE
HOSTILE = {  # case: (formats, entries, the entry refused); {out} is tmp_path, outside the extraction folder
    "dotdot": ("zip tar", [("../evil.txt", b"x")], "../evil.txt"),
    "nested-dotdot": ("zip tar", [("ok/../../evil.txt", b"x")], "ok/../../evil.txt"),
    "absolute": ("zip tar", [("{out}/evil.txt", b"x")], "{out}/evil.txt"),
    "backslash-dotdot": ("zip tar", [("..\\evil.txt", b"x")], "..\\evil.txt"),
    "drive-letter": ("zip tar", [("C:/evil.txt", b"x")], "C:/evil.txt"),
    "symlink": ("zip tar", [("data/link", (SYM, "/etc/passwd"))], "data/link"),
    "symlink-write-through": ("zip tar", [("link", (SYM, "../outside")), ("link/evil.txt", b"x")], "link"),
    "abs-symlink-write-through": ("zip tar", [("link", (SYM, "{out}/outside")), ("link/evil.txt", b"x")], "link"),
    "hardlink-write-through": ("tar", [("hard", (HARD, "../victim.txt")), ("hard", b"pwned")], "hard"),
    "abs-hardlink-write-through": ("tar", [("hard", (HARD, "{out}/victim.txt")), ("hard", b"pwned")], "hard"),
    "fifo": ("tar", [("pipe", (FIFO, ""))], "pipe"),
    "device": ("tar", [("tty", (CHR, ""))], "tty"),
}
CORRUPT = {
    "not-an-archive": b"this is not an archive",
    "truncated-zip": zip_bytes([("ok.txt", b"x")])[:-30],
    "truncated-tar": tar_bytes({"ok.txt": b"x" * 1000})[:-30],
}


@pytest.mark.parametrize("fmt,entries,refused", [
    pytest.param(fmt, entries, refused, id=f"{fmt}-{case}")
    for case, (formats, entries, refused) in HOSTILE.items() for fmt in formats.split()
] + [pytest.param("raw", body, None, id=case) for case, body in CORRUPT.items()])
def test_hostile_or_corrupt_archives_are_refused(server, env, monkeypatch, fmt, entries, refused):
    if fmt == "raw":
        body, message = entries, "corrupt archive|not a zip or tar archive"
    else:
        placed = [(name.format(out=env), (data[0], data[1].format(out=env)) if isinstance(data, tuple) else data)
                  for name, data in entries]
        body = (tar_bytes if fmt == "tar" else zip_bytes)(placed)
        message = re.escape(f"refusing entry '{refused.format(out=env)}'")
    (env / "outside").mkdir()
    (env / "victim.txt").write_bytes(b"untouched")
    serve_as(monkeypatch, server, "cars", body)
    try:
        download.fetch(cfg_for("cars"), env / "raw")
        error = "no error: the archive was extracted"
    except Pix2PixError as err:
        error = str(err)
    # fetch extracts into env/.raw.*.tmp (atomic_dir next to env/raw), so an escape lands in env itself:
    # '../evil.txt' and '{out}/evil.txt' at env/evil.txt, 'link/evil.txt' at env/outside/evil.txt, and a
    # hard link to '../victim.txt' rewrites env/victim.txt. Only the download cache may be new.
    left = sorted(str(p.relative_to(env)) for p in env.rglob("*") if p.relative_to(env).parts[0] != "cache")
    assert left == ["outside", "victim.txt"], f"escaped the extraction folder: {left}"
    assert (env / "victim.txt").read_bytes() == b"untouched"
    assert re.search(message, error), error


def test_archive_bomb_is_refused(server, env, monkeypatch):
    monkeypatch.setattr(download, "MAX_EXTRACTED_BYTES", 10_000)
    serve_as(monkeypatch, server, "cars", zip_bytes([("big.bin", b"\0" * 20_000)]))
    with pytest.raises(Pix2PixError, match="archive bomb"):
        download.fetch(cfg_for("cars"), env / "raw")


@mirror_or_synthetic
def test_cars_zip_in_any_layout_pairs_by_stem(server, env, monkeypatch):
    serve_as(monkeypatch, server, "cars", zip_bytes(car_zip_entries(6)))
    cfg = cfg_for("cars", **{"data.val_fraction": 0.2})
    manifest = build_tiles(download.fetch(cfg, env / "raw"), env / "tiles", cfg)
    assert len(manifest) == 6 and set(manifest["split"]) == {"train", "val", "test"}
    assert all(Path(a).stem == Path(b).stem for a, b in zip(manifest["source_a"], manifest["source_b"]))


@needs_shared
def test_cars_from_the_offline_mirror(env, monkeypatch):
    monkeypatch.setenv("PIX2PIX_MIRROR", str(SHARED_DATA))
    cfg = cfg_for("cars")
    raw = download.fetch(cfg, env / "raw")
    assert len(list((raw / "dataset" / "train" / "images").iterdir())) == 121
    # the dataset's files and a record of what it is, not where this copy came from
    assert sorted(p.name for p in raw.iterdir()) == ["SOURCE.json", "dataset"]
    source = (raw / "SOURCE.json").read_text()
    assert "cars" in source and str(SHARED_DATA) not in source and "mirror" not in source


def test_mirror_that_is_not_a_folder_is_a_clear_error(env, monkeypatch):
    monkeypatch.setenv("PIX2PIX_MIRROR", str(env / "nowhere"))
    with pytest.raises(Pix2PixError, match=r"nowhere \(data.mirror or PIX2PIX_MIRROR\): not a folder"):
        download.fetch(cfg_for("cars"), env / "raw")


def test_data_mirror_must_hold_the_dataset_where_the_machines_mirror_may_not(env, monkeypatch, tmp_path):
    """data.mirror names a copy of this dataset: one that holds other files (your own pairs, say) is
    refused in one line; $PIX2PIX_MIRROR, a machine's shelf of datasets, may lack one (the URL follows)."""
    own = tmp_path / "own-pairs"
    (own / "A").mkdir(parents=True)
    with pytest.raises(Pix2PixError, match=r"data.mirror .*own-pairs holds no cars/ or car-segmentation/ or "
                                           r"car-segmentation.zip; .*dataset: folder"):
        download.fetch(cfg_for("cars", **{"data.mirror": str(own)}), env / "raw")
    monkeypatch.setenv("PIX2PIX_MIRROR", str(own))
    monkeypatch.setitem(DATASETS, "cars", dataclasses.replace(DATASETS["cars"], urls=("http://127.0.0.1:9/c.zip",)))
    with pytest.raises(Pix2PixError, match="could not download 'cars'"):  # on to the URL, which fails here
        download.fetch(cfg_for("cars"), env / "raw")
    assert not (env / "raw").exists()


@mirror_or_synthetic
@pytest.mark.parametrize("damage", ["changed", "missing"])
def test_a_mirror_folder_whose_files_do_not_match_its_sums_is_refused(env, monkeypatch, tmp_path, damage):
    folder = tmp_path / "mirror" / "facades"
    write_mirror(folder.parent, small_facades())
    files = sorted(p for p in folder.rglob("*.jpg"))
    if damage == "changed":
        files[0].write_bytes(files[0].read_bytes() + b"!")
    else:
        files[0].unlink()
    message = "sha256 does not match" if damage == "changed" else "listed in .* but missing"
    with pytest.raises(Pix2PixError, match=f"{files[0].name}: {message}.*restore"):
        download.fetch(cfg_for("facades", **{"data.mirror": str(folder.parent)}), env / "raw")
    assert not (env / "raw").exists()


def test_cityscapes_from_the_users_archives(env, tmp_path):
    """Two zips laid out as gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip are."""
    archives = tmp_path / "my-archives"
    write_cityscapes_zips(archives)
    cfg = cfg_for("cityscapes", **{"data.mirror": str(archives)})
    manifest = build_tiles(download.fetch(cfg, env / "raw"), env / "tiles", cfg)
    assert manifest["split"].value_counts().to_dict() == {"train": 2, "val": 1, "test": 2}
    assert all(manifest["source_b"].str.endswith("_gtFine_color.png"))  # never labelIds, never test
    assert all(manifest[manifest["split"] == "test"]["source_a"].str.contains("/val/"))  # tested on val, as the reference
    tile = np.asarray(Image.open(env / "tiles" / manifest["tile"][0]))
    label_half = {tuple(c) for c in tile[:, tile.shape[0]:].reshape(-1, 3)}
    assert label_half <= {ROAD, CAR}  # resized nearest: no blended colours


def test_cityscapes_without_archives_explains_the_licence(env):
    with pytest.raises(Pix2PixError, match="forbids redistribution.*data.mirror"):
        download.fetch(cfg_for("cityscapes"), env / "raw")


def test_ade20k_keeps_only_outdoor_scenes_and_colours_150_classes(server, env, monkeypatch):
    serve_as(monkeypatch, server, "ade20k-outdoor", ade20k_zip())
    cfg = cfg_for("ade20k-outdoor", **{"data.val_fraction": 0.34})
    manifest = build_tiles(download.fetch(cfg, env / "raw"), env / "tiles", cfg)
    kept = {Path(p).stem for p in manifest["source_b"]}
    assert kept == ADE_OUTDOOR
    tile = np.asarray(Image.open(env / "tiles" / manifest["tile"][0]))
    assert {tuple(c) for c in tile[:, :tile.shape[0]].reshape(-1, 3)} <= {tuple(PALETTES["ade20k"].colours[i]) for i in (0, 13, 150)}
