"""The Markdown files read outside Sphinx (README, CONTRIBUTING, ...) link to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: ``[text](target)`` and ``![alt](target)``; external and in-page links are not followed.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _local_links(markdown: Path) -> list[str]:
    targets = LINK.findall(markdown.read_text())
    return [t for t in targets if not t.startswith(("http://", "https://", "mailto:", "#"))]


@pytest.mark.parametrize("markdown", ["README.md", "CONTRIBUTING.md", "sandbox/README.md", "CHANGELOG.md"])
def test_every_local_link_points_to_a_file(markdown):
    path = REPO / markdown
    missing = [t for t in _local_links(path) if not (path.parent / t.split("#", 1)[0]).exists()]
    assert missing == []


def test_the_readme_links_into_the_docs_and_shows_one_picture():
    links = _local_links(REPO / "README.md")
    assert [t for t in links if t.endswith(".png")] == ["docs/sfox-onboarding.png"]
    pages = {t.split("#", 1)[0] for t in links if t.startswith("docs/") and t.endswith(".md")}
    assert {"docs/install.md", "docs/connections/sfox.md", "docs/guides/batch-onboarding.md"} <= pages
    assert len((REPO / "README.md").read_text().splitlines()) < 150
