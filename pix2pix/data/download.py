"""Fetch a dataset into data/raw/: mirror first, then the URL; verify; extract safely.

- Mirror (param `data.mirror`, then env `PIX2PIX_MIRROR`; a folder): holds the source's archive
  file(s) or its extracted folder. Cityscapes, which may not be redistributed, comes this way only.
- HTTP: streamed with a progress bar, resumed from a partial file (`Range`), retried with
  backoff, with a timeout. Partial downloads live in the download cache (`PIX2PIX_CACHE`,
  default ~/.cache/pix2pix), never in the output.
- The output folder is built under a temporary name and renamed into place: a failed run leaves
  nothing.
- The output depends on the dataset's bytes only, never on where they came from, so DVC gives the
  same hash on every machine: a mirror folder's own bookkeeping (SHA256SUMS, SOURCE.txt) is not
  copied, an archive's single wrapper folder (facades.tar.gz holds facades/...) is unwrapped as a
  mirror folder already is, and `SOURCE.json` holds the dataset's name and licence note, not the
  path or URL (those are logged).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pix2pix.data import synthetic
from pix2pix.data.sources import DATASETS, Source
from pix2pix.errors import Pix2PixError
from pix2pix.files import atomic_dir, cache_dir, write_json

log = logging.getLogger(__name__)
MIRROR_ENV = "PIX2PIX_MIRROR"
RETRIES, BACKOFF_S, TIMEOUT_S = 3, 1.0, 30.0
MAX_EXTRACTED_BYTES = 64 * 2**30  # archive-bomb cap: far above any dataset here
CHUNK = 1 << 20


def mirror_folder(cfg) -> tuple[Path | None, bool]:
    """(The mirror to try, whether it must hold the dataset): data.mirror, which must, else
    $PIX2PIX_MIRROR, a machine's shelf that may lack one (its URL follows); (None, False) for neither."""
    if cfg.data.mirror:
        return Path(cfg.data.mirror), True
    return (Path(os.environ[MIRROR_ENV]), False) if os.environ.get(MIRROR_ENV) else (None, False)


def fetch(cfg, out_dir: str | Path) -> Path:
    """Materialise `cfg.dataset` in `out_dir`, with a SOURCE.json naming it; return the folder.

    `dataset: folder` downloads nothing (prepare reads data.path): SOURCE.json alone says so."""
    source = DATASETS[cfg.dataset]
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if source.name == "synthetic":
            log.info("generating %d synthetic car pairs (seed %d)", cfg.data.synthetic_count, cfg.seed)
            synthetic.write_pairs(tmp, cfg.data.synthetic_count, cfg.seed)
        elif source.name != "folder":
            origin = from_mirrors(source, cfg, tmp) or from_url(source, tmp)
            log.info("%s from %s", source.name, ", ".join(f"{k} {v}" for k, v in origin.items()))
            unwrap(tmp, {source.name, *source.mirror_names, *(archive_stem(a) for a in source.archives)})
        write_json(tmp / "SOURCE.json", {"dataset": source.name, "task": source.task, "note": source.note})
    return out_dir


def from_mirrors(source: Source, cfg, dest: Path) -> dict | None:
    """The dataset from data.mirror (which must hold it), else from $PIX2PIX_MIRROR if it does."""
    mirror, _ = mirror_folder(cfg)
    found = from_mirror(source, mirror, dest) if mirror else None
    if found is None and (refusal := mirror_refusal(source, cfg)):
        raise Pix2PixError(f"{refusal}; data.mirror is for a copy of a built-in dataset (for your own pairs set "
                           "dataset: folder and data.path)")
    return found


def mirror_refusal(source: Source, cfg) -> str | None:
    """Why the download stage refuses data.mirror, or None: set, it must hold `source` ($PIX2PIX_MIRROR
    may lack it). `pix2pix doctor` reports the same before a run."""
    mirror, strict = mirror_folder(cfg)
    return f"data.mirror {mirror} holds no {mirror_names(source)}" if strict and not mirror_holds(source, mirror) else None


def mirror_names(source: Source) -> str:
    """What a mirror holding `source` holds: its folder or its archives."""
    return " or ".join([f"{n}/" for n in (source.name, *source.mirror_names)] + list(source.archives))


MIRROR_BOOKKEEPING = ("SHA256SUMS", "SOURCE.txt")  # a mirror folder's own files, not the dataset's


def archive_stem(name: str) -> str:
    """facades.tar.gz -> facades, car-segmentation.zip -> car-segmentation."""
    return name.split(".")[0]


def unwrap(folder: Path, wrapper_names: set[str]) -> None:
    """Lift the contents of a lone top-level folder named like the dataset up into `folder`."""
    entries = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name in wrapper_names:
        inner = entries[0].rename(folder / f".{entries[0].name}.unwrap")
        for child in inner.iterdir():
            child.rename(folder / child.name)
        inner.rmdir()


def mirror_holds(source: Source, mirror: Path) -> bool:
    """Whether from_mirror would find `source` in `mirror`: its extracted folder or all its archives."""
    return (any((mirror / name).is_dir() for name in (source.name, *source.mirror_names))
            or bool(source.archives) and all((mirror / name).is_file() for name in source.archives))


def from_mirror(source: Source, mirror: Path, dest: Path) -> dict | None:
    """Copy the extracted dataset, or extract its archives, from a mirror folder; None if absent."""
    if not mirror.is_dir():
        raise Pix2PixError(f"mirror {mirror} (data.mirror or {MIRROR_ENV}): not a folder; fix the path or unset it")
    for name in (source.name, *source.mirror_names):
        folder = mirror / name
        if folder.is_dir():
            log.info("copying %s from the mirror %s", source.name, folder)
            verify_sums(folder)
            shutil.copytree(folder, dest, dirs_exist_ok=True, ignore=lambda d, names: [
                n for n in names if d == str(folder) and n in MIRROR_BOOKKEEPING])
            return {"mirror folder": str(folder)}
    archives = [mirror / name for name in source.archives]
    if archives and all(a.is_file() for a in archives):
        digests = {}
        for archive in archives:
            digests[archive.name] = check_sha256(archive, source.sha256 if len(archives) == 1 else None)
            extract(archive, dest)
        return {"mirror archives": str(mirror), "sha256": digests}
    log.info("%s holds no %s; trying the next source", mirror, source.name)
    return None


def from_url(source: Source, dest: Path) -> dict:
    if not source.urls:
        raise Pix2PixError(f"dataset '{source.name}' has no public download: {source.note}")
    archive = cache_dir() / source.archives[0]
    errors = []
    for url in source.urls:  # alternative addresses of the same archive
        try:
            if not archive.exists():
                download(url, archive)
            digest = check_sha256(archive, source.sha256)
            extract(archive, dest)
            return {"url": url, "sha256": digest}
        except DownloadError as err:
            errors.append(f"{url}: {err}")
    raise Pix2PixError(
        f"could not download '{source.name}' ({'; '.join(errors)}); set {MIRROR_ENV} or data.mirror to a "
        f"folder holding {archive.name} or the extracted dataset, or use dataset: synthetic"
    )


class DownloadError(Exception):
    pass


def download(url: str, dest: Path) -> None:
    """Stream `url` to `dest`, resuming `dest.part` across attempts and runs."""
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(RETRIES):
        try:
            _download_once(url, part)
            os.replace(part, dest)
            return
        except (urllib.error.URLError, OSError, DownloadError) as err:
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500 and err.code != 416:
                raise DownloadError(f"HTTP {err.code}") from None
            if attempt == RETRIES - 1:
                raise DownloadError(str(getattr(err, "reason", err))) from None
            log.warning("download of %s failed (%s); retrying", url, err)
            time.sleep(BACKOFF_S * 2**attempt)


def _download_once(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if have and response.status != 206:  # server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=PurePosixPath(url).name
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"truncated: got {part.stat().st_size} of {total} bytes")


def check_sha256(path: Path, expected: str | None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    actual = digest.hexdigest()
    if expected and actual != expected:
        path.unlink()  # a corrupt download must not be reused
        raise Pix2PixError(f"{path}: sha256 {actual} does not match the pinned {expected}; it was deleted, run again")
    return actual


def verify_sums(folder: Path) -> None:
    """Check a mirror folder's SHA256SUMS (sha256sum format), if it has one."""
    sums = folder / "SHA256SUMS"
    if not sums.exists():
        return
    for line in tqdm(sums.read_text().splitlines(), desc=f"verify {folder.name}", unit="file"):
        expected, name = line.split(maxsplit=1)
        path = folder / name.lstrip("*")
        if not path.is_file():
            raise Pix2PixError(f"{path}: listed in {sums} but missing; restore the mirror")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            raise Pix2PixError(f"{path}: sha256 does not match {sums}; restore the file")


def extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive, refusing absolute paths, '..', links and archive bombs."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = [(m.filename, m.file_size, m.is_dir(), (m.external_attr >> 16) & 0o170000 == 0o120000) for m in zf.infolist()]
                _check_members(archive, members)
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = [(m.name, m.size, m.isdir(), m.issym() or m.islnk() or not (m.isfile() or m.isdir())) for m in tf.getmembers()]
                _check_members(archive, members)
                tf.extractall(dest, filter="data")
        else:
            raise Pix2PixError(f"{archive}: not a zip or tar archive; delete it and download again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise Pix2PixError(f"{archive}: corrupt archive ({err}); delete it and download again") from None


def _check_members(archive: Path, members) -> None:
    total = 0
    for name, size, is_dir, is_link in members:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise Pix2PixError(f"{archive}: refusing entry '{name}' (path escapes the target folder)")
        if is_link:
            raise Pix2PixError(f"{archive}: refusing entry '{name}' (links and special files are not extracted)")
        total += size
        if total > MAX_EXTRACTED_BYTES:
            raise Pix2PixError(f"{archive}: expands beyond {MAX_EXTRACTED_BYTES >> 30} GiB; refusing (archive bomb?)")
