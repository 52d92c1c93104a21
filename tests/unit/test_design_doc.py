"""The code cites the design by section as ``docs/design.md §N``: the file is
in the repository, every cited section exists, and nothing cites the design
file that lives outside the repository any more."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED_FROM = ("src", "ext", "tests", "scripts", "deploy", "benchmarks")
SUFFIXES = {".py", ".pyx", ".pxd", ".pxi", ".pyi", ".sh", ".yaml", ".yml", ".md", ".tpl", ".txt"}
# Spelled in two parts so this file does not cite it itself.
OUTSIDE = re.compile(r"\bDESIGN" + r"(\.md)?\s*§|\.\./shared/DESIGN" + r"\.md")
CITATION = re.compile(r"docs/design\.md §(\d+)")


def sources():
    for top in CITED_FROM:
        for p in (ROOT / top).rglob("*"):
            if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts:
                yield p


def test_every_citation_names_a_section_of_docs_design_md():
    sections = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs/design.md").read_text(), re.M))
    assert {"1", "2", "3", "4", "5", "6"} <= sections
    cited, outside = set(), []
    for p in sources():
        text = p.read_text(errors="replace")
        cited |= {(n, p.relative_to(ROOT).as_posix()) for n in CITATION.findall(text)}
        if OUTSIDE.search(text):
            outside.append(p.relative_to(ROOT).as_posix())
    assert cited, "no citation found: the pattern is stale"
    assert sorted(c for c in cited if c[0] not in sections) == []
    assert outside == [], f"cite docs/design.md §N instead: {outside}"
