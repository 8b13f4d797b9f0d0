"""The README stays a first screen and every link in it and in docs/ leads somewhere real."""

from __future__ import annotations

import re
from pathlib import Path

README_LIMIT = 8000
SETUP = 'pip install -e ".[dev]"'

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_NOT_IN_ANCHOR = re.compile(r"[^\w\- ]")


def project_root() -> Path:
    here = Path(__file__).resolve()
    return next(parent for parent in here.parents if (parent / "pyproject.toml").is_file())


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks: a `# comment` in a bash block is no heading, `a[0](x)` no link."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's rule: lower-case, punctuation other than '-' and '_' dropped, spaces to '-'."""
    return _NOT_IN_ANCHOR.sub("", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in prose_lines(text):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(text: str) -> list[str]:
    found: list[str] = []
    for line in prose_lines(text):
        # Link text may hold code spans; blanking them keeps "[`bench:` keys](x)" a link and "`[a](b)`" not one.
        found += _LINK.findall(_CODE_SPAN.sub("", line))
    return [target for target in found if not _SCHEME.match(target)]


def broken_links(root: Path, page: Path) -> list[str]:
    """One line per relative link of `page` whose file or heading does not exist."""
    root = root.resolve()
    problems: list[str] = []
    for target in links(page.read_text(encoding="utf-8")):
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        name = f"{page.resolve().relative_to(root).as_posix()}: {target}"
        if not dest.is_relative_to(root):
            problems.append(f"{name}: outside the project")
        elif not dest.exists():
            problems.append(f"{name}: no such file")
        elif fragment and (dest.suffix != ".md" or fragment not in anchors(dest.read_text(encoding="utf-8"))):
            problems.append(f"{name}: no such heading")
    return problems


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def unlinked_docs(root: Path) -> list[str]:
    readme = root / "README.md"
    linked = {(root / target.partition("#")[0]).resolve() for target in links(readme.read_text(encoding="utf-8"))}
    return [doc.relative_to(root).as_posix() for doc in sorted((root / "docs").glob("*.md")) if doc.resolve() not in linked]


def test_readme_is_a_first_screen_with_the_two_commands_first() -> None:
    text = (project_root() / "README.md").read_text(encoding="utf-8")
    assert len(text) <= README_LIMIT, f"README.md has {len(text)} characters; move reference material to docs/"
    before_first_section = text.split("\n## ", 1)[0]
    assert SETUP in before_first_section
    assert re.search(r"^pytest\b", before_first_section, re.MULTILINE)


def test_every_relative_link_resolves() -> None:
    root = project_root()
    assert [problem for page in pages(root) for problem in broken_links(root, page)] == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    root = project_root()
    assert len(pages(root)) > 1
    assert unlinked_docs(root) == []


def test_anchor_follows_githubs_rule() -> None:
    assert anchor("Rebuild rules (each pinned by a test)") == "rebuild-rules-each-pinned-by-a-test"
    assert anchor("`bench:` keys") == "bench-keys"
    assert anchor("perf_analyzer and genai-perf") == "perf_analyzer-and-genai-perf"
    assert anchor("Sweeps, compare and promote") == "sweeps-compare-and-promote"
    assert anchors("# A\n```bash\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_a_broken_link_heading_or_orphan_page_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Real heading\n\nBack to [top](../README.md#tour).\n", encoding="utf-8")
    (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "# T\n\n## Tour\n\n[ok](docs/a.md#real-heading) [gone](docs/b.md) [typo](docs/a.md#real-headin) "
        "[self](#tour) [selftypo](#tours) [web](https://example.com/x.md) [up](../x.md)\n"
        "```\n[in code](docs/none.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(tmp_path, tmp_path / "README.md") == [
        "README.md: docs/b.md: no such file",
        "README.md: docs/a.md#real-headin: no such heading",
        "README.md: #tours: no such heading",
        "README.md: ../x.md: outside the project",
    ]
    assert broken_links(tmp_path, tmp_path / "docs" / "a.md") == []
    assert unlinked_docs(tmp_path) == ["docs/orphan.md"]
