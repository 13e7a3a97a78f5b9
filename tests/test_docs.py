"""The README and docs/ point at things that exist: every relative link (and the heading it names),
every test cited as file::name, and every project path cited in backticks."""

import re
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
PATH = re.compile(r"`((?:pix2pix|tests|stages|docs|metrics/reference)/[\w./-]+\.\w+)`")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    return broken


def missing_tests(page: Path) -> list[str]:
    missing = []
    for file, name in TEST.findall(page.read_text()):
        source = ROOT / file
        if not source.exists() or not re.search(rf"^def {name}\(", source.read_text(), re.M):
            missing.append(f"{file}::{name}")
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_test_and_path_a_page_cites_exists(page):
    assert broken_links(page) == []
    assert missing_tests(page) == []
    assert [p for p in PATH.findall(page.read_text()) if not (ROOT / p).exists()] == []


def test_the_readme_is_the_front_door_not_the_manual():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_checks_find_a_broken_link_a_missing_test_and_a_missing_path(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](page.md#title) [gone](nowhere.md) [bad anchor](page.md#nothing)\n"
                    "`tests/test_docs.py::test_the_checks_find_a_broken_link_a_missing_test_and_a_missing_path` "
                    "`tests/test_docs.py::test_that_was_renamed` `pix2pix/nothing.py`\n")
    assert broken_links(page) == ["nowhere.md", "page.md#nothing"]
    assert missing_tests(page) == ["tests/test_docs.py::test_that_was_renamed"]
    assert PATH.findall(page.read_text()) == ["pix2pix/nothing.py"]
