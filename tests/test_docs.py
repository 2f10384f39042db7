"""The README stays one screen and a half, and every link in it and in docs/ leads somewhere.

A reader follows links from the README into docs/ and between the pages; a link to a page that
was renamed, or to a heading that was reworded, is a dead end. Links are checked the way GitHub
renders them: relative to the file, anchors as GitHub's heading slugs.
"""

import re
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+).+?\1")
# [text](target "title") and ![alt](target); the text may hold inline code, not brackets
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, inline code removed."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, CODE_SPAN.sub("", line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path):
        found += [(number, target) for target in INLINE_LINK.findall(line)]
        reference = REFERENCE_LINK.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def broken(path: Path) -> list[str]:
    """What is wrong with each relative link of one page, as 'file:line: target: why'."""
    problems = []
    for number, target in links(path):
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if not target or SCHEME.match(target):
            continue  # addresses outside the repository are checked (for the README) below
        if target.startswith("/"):
            problems.append(f"{where}: write links relative to the page, not from /")
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.is_relative_to(ROOT):
            problems.append(f"{where}: leads outside the repository")
        elif not linked.exists():
            problems.append(f"{where}: no such file")
        elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{where}: {linked.name} has no heading with anchor #{anchor}")
    return problems


def test_readme_fits_one_screen_and_a_half():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, at most {README_MAX_LINES}: move the detail into a page under docs/")


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page):
    assert not broken(page), "broken links:\n" + "\n".join(broken(page))


def test_readme_links_nowhere_outside_the_repository():
    outside = [f"README.md:{number}: {line.strip()}" for number, line in prose_lines(README)
               if re.search(r"\bhttps?://|\bwww\.", line)]
    outside += [f"README.md:{number}: {target}" for number, target in links(README) if SCHEME.match(target)]
    assert not outside, "the README links only into the repository (put the address in a docs page):\n" + "\n".join(outside)


def test_the_readme_leads_into_the_docs():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"pages under docs/ the README never links to: {missing}"


def test_the_checker_catches_a_broken_link(tmp_path, monkeypatch):
    """A wrong file, a wrong anchor and a link from / are each reported; a good one is not."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Two words: `code` here\n\n```\n# not a heading\n```\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#two-words-code-here) [gone](docs/b.md) [bad](docs/a.md#not-a-heading)\n"
                    "[root](/docs/a.md) `[in code](nowhere.md)`\n")
    problems = broken(page)
    assert len(problems) == 3, problems
    assert "no such file" in problems[0] and "no heading with anchor" in problems[1] and "from /" in problems[2]
