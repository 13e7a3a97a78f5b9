"""Atomic writes: the old content or the new, never half of one, and no temp files left behind."""

import os

import pytest

from pix2pix import files


@pytest.fixture
def fsynced(monkeypatch):
    paths = []
    real = os.fsync

    def record(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", record)
    return paths


def test_atomic_path_fsyncs_then_renames(tmp_path, fsynced):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{") and len(fsynced) == 1
    assert fsynced[0] != str(target) and os.path.dirname(fsynced[0]) == str(tmp_path)  # a temp file beside it


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["grid.png"]


def test_atomic_dir_fsyncs_every_file_and_leaves_nothing_on_failure(tmp_path, fsynced):
    with files.atomic_dir(tmp_path / "tiles") as tmp:
        (tmp / "train").mkdir()
        (tmp / "train" / "a.png").write_bytes(b"x")
        (tmp / "manifest.csv").write_text("tile\n")
    assert len(fsynced) == 2 and sorted(os.listdir(tmp_path / "tiles")) == ["manifest.csv", "train"]
    with pytest.raises(RuntimeError):
        with files.atomic_dir(tmp_path / "other") as tmp:
            (tmp / "a.png").write_bytes(b"x")
            raise RuntimeError("killed mid-prepare")
    assert sorted(os.listdir(tmp_path)) == ["tiles"]
