"""Every image the README shows is in the repository: a moved or deleted
screenshot would otherwise leave a broken picture on the project page."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Markdown ![alt](path "title") and HTML <img src="path">
IMAGE = re.compile(r'!\[[^\]]*\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)|<img\b[^>]*\bsrc="([^"]+)"')


def readme_images(text: str) -> list[str]:
    """The repository-relative images the text shows (remote URLs are not ours to check)."""
    found = [md or html for md, html in IMAGE.findall(text)]
    return [p.split("#")[0] for p in found if not re.match(r"[a-z][a-z0-9+.-]*:|//", p)]


def missing(text: str, root: Path) -> list[str]:
    return [p for p in readme_images(text) if not (root / p).is_file()]


def test_every_readme_image_exists_and_is_small():
    text = (ROOT / "README.md").read_text()
    images = readme_images(text)
    assert {"docs/screenshots/status-light.png", "docs/screenshots/status-dark.png",
            "docs/screenshots/status-phone.png"} <= set(images)
    assert missing(text, ROOT) == []
    for p in images:
        size = (ROOT / p).stat().st_size
        assert size < 300_000, f"{p}: {size} bytes, keep README images small"


def test_the_check_sees_both_forms_and_a_missing_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/x.png").write_bytes(b"\x89PNG")
    text = ('![a](docs/x.png) ![b](docs/y.png "t") <img alt="c" src="docs/w.png">'
            ' ![badge](https://example.com/b.svg) [not an image](docs/v.png)')
    assert readme_images(text) == ["docs/x.png", "docs/y.png", "docs/w.png"]
    assert missing(text, tmp_path) == ["docs/y.png", "docs/w.png"]
