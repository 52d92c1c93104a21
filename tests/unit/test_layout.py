"""CONTRIBUTING.md's layout block names every module and package under
src/traceo_sampler/ and ext/, and nothing that is not there: a module added
without its line (or a line left behind by a removed one) fails here."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("src/traceo_sampler", "ext")
# What counts as a module: sources only (the generated .c and the built .so are not).
MODULE_SUFFIXES = (".py", ".pyi", ".pyx", ".pxd", ".pxi")


def layout_entries(text: str) -> set[str]:
    """The repository paths the first code block under '## Layout' names: one
    entry per line, its first word, nested under the entry above it by indentation."""
    section = text.split("\n## Layout\n", 1)[1]
    block = section.split("```", 2)[1].split("\n", 1)[1]
    entries: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, directory path)
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else "") + name
        entries.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((indent, path))
    return entries


def modules_on_disk(root: Path) -> set[str]:
    """Every source module and package under the two trees (a package's
    __init__.py is named by the package's own line)."""
    found: set[str] = set()
    for tree in TREES:
        base = root / tree
        found.add(tree)
        for p in base.rglob("*"):
            if "__pycache__" in p.parts:
                continue
            rel = p.relative_to(root).as_posix()
            if p.is_dir() and (p / "__init__.py").is_file():
                found.add(rel)
            elif p.is_file() and p.suffix in MODULE_SUFFIXES and p.name != "__init__.py":
                found.add(rel)
    return found


def test_the_layout_block_names_every_module_and_nothing_else():
    named = layout_entries((ROOT / "CONTRIBUTING.md").read_text())
    on_disk = modules_on_disk(ROOT)
    in_trees = {n for n in named if n.split("/", 1)[0] in ("src", "ext")}
    missing = sorted(on_disk - in_trees)
    assert not missing, f"add a line for each to CONTRIBUTING.md's layout block: {missing}"
    # Lines for files that are not modules (static/, py.typed) are fine as long as they exist.
    stale = sorted(n for n in named if not (ROOT / n).exists())
    assert not stale, f"CONTRIBUTING.md's layout block names what does not exist: {stale}"


def test_the_check_reads_nesting_and_sees_a_missing_module(tmp_path):
    text = ("x\n## Layout\n\n```\nsrc/traceo_sampler/   pkg\n  a.py   one\n  sub/   a package\n"
            "    b.py   two\n  c.py   three\next/   hot\n  _x.pyx   four\n```\n")
    assert layout_entries(text) == {"src/traceo_sampler", "src/traceo_sampler/a.py",
                                    "src/traceo_sampler/sub", "src/traceo_sampler/sub/b.py",
                                    "src/traceo_sampler/c.py", "ext", "ext/_x.pyx"}
    pkg = tmp_path / "src/traceo_sampler"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "ext").mkdir()
    for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py", "c.py", "d.py"):
        (pkg / f).write_text("")
    (tmp_path / "ext/_x.pyx").write_text("")
    (tmp_path / "ext/_x.c").write_text("")
    assert modules_on_disk(tmp_path) - layout_entries(text) == {"src/traceo_sampler/d.py"}
