"""Atomic writes: the old content or the new, never half of one, and no temp files left behind."""

import os
from pathlib import Path

import pytest

from conftest import ROOT
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


# Writers allowed to write in place, and why; every other write in the package goes through
# files.atomic_path / atomic_dir (lexically inside `with atomic_...`).
IN_PLACE = {
    ("pix2pix/files.py", "write_text"): "the atomic helper itself",
    ("pix2pix/data/download.py", "_download_once"): "the .part file a resumed download appends to",
    ("pix2pix/bench/scaling.py", "scaling_rows"): "a temporary folder of the benchmark's worker specs",
    ("pix2pix/tracking.py", "store_lock"): "an empty lock file, opened to append nothing",
    ("pix2pix/data/synthetic.py", "write_pairs"): "into the temporary folder its callers' atomic_dir made",
    ("pix2pix/demo.py", "encode"): "a PNG in memory, for an HTTP answer",
}
WRITES = {"save", "savefig", "to_csv", "savez", "write_text", "write_bytes"}


def in_place_writes(path: Path) -> list[tuple[str, int]]:
    """(enclosing function, line) of each write call in `path` that is not inside `with atomic_...`."""
    import ast

    found = []

    def visit(node, function, atomic):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.With) and any(
                isinstance(i.context_expr, ast.Call) and getattr(i.context_expr.func, "id", "").startswith("atomic_")
                for i in node.items):
            atomic = True
        if isinstance(node, ast.Call) and not atomic:
            f = node.func
            opens = isinstance(f, ast.Name) and f.id == "open" and any(
                isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax")
                for a in node.args[1:2])
            if opens or (isinstance(f, ast.Attribute) and f.attr in WRITES and not (
                    isinstance(f.value, ast.Name) and f.value.id in ("checkpoints", "generator_file"))):
                found.append((function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function, atomic)

    visit(ast.parse(path.read_text()), "<module>", False)
    return found


def test_every_writer_of_an_output_uses_the_atomic_helpers():
    offenders = []
    for path in sorted([*(ROOT / "pix2pix").rglob("*.py"), *(ROOT / "stages").glob("*.py")]):
        name = path.relative_to(ROOT).as_posix()
        offenders += [f"{name}:{line} in {fn}" for fn, line in in_place_writes(path) if (name, fn) not in IN_PLACE]
    assert offenders == []


def test_the_atomic_writer_check_finds_a_plain_write(tmp_path):
    (tmp_path / "m.py").write_text("def f(p, img):\n    img.save(p)\n\ndef g(p, img):\n"
                                   "    with atomic_path(p) as tmp:\n        img.save(tmp)\n")
    assert in_place_writes(tmp_path / "m.py") == [("f", 2)]


def test_outputs_get_the_modes_of_a_plain_write_not_the_private_temp_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        files.write_text(tmp_path / "out.txt", "x")
        with files.atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "a.txt").write_text("a")
        assert files._umask() == 0o022  # read back, and left as it was
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644  # mkstemp's file was 0600
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755  # mkdtemp's folder was 0700


def test_a_new_atomic_dir_clears_its_own_killed_writers_temp_folders_only(tmp_path):
    """A SIGKILLed writer leaves .<name>.<8 random>.tmp behind; the next writer of that output
    removes it, but never the temp folder of a sibling output whose name merely starts the same,
    nor one of an output whose name holds glob characters."""
    killed = tmp_path / ".tiles.abcd1234.tmp"
    sibling = tmp_path / ".tiles.old.efgh5678.tmp"  # being written now, for the output tiles.old
    bracketed = tmp_path / ".t[1].ijkl9012.tmp"
    for folder in (killed, sibling, bracketed):
        folder.mkdir()
    with files.atomic_dir(tmp_path / "tiles") as tmp:
        (tmp / "a.txt").write_text("a")
    assert not killed.exists() and sibling.exists() and bracketed.exists()
    with files.atomic_dir(tmp_path / "t[1]") as tmp:
        (tmp / "a.txt").write_text("a")
    assert not bracketed.exists() and sibling.exists()
