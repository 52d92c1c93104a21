"""docs/config.md and docs/metrics.md are generated from the code
(python -m traceo_sampler.docgen); these fail when a file is stale."""
import os

import msgspec
import pytest

from traceo_sampler import docgen, telemetry
from traceo_sampler.config import Sampler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("rel", sorted(docgen.DOCS))
def test_generated_doc_is_current(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        on_disk = fh.read()
    assert on_disk == docgen.DOCS[rel](), (
        f"{rel} is stale: regenerate with `python -m traceo_sampler.docgen`")


def test_check_flags_a_stale_file(tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "metrics.md").write_text(docgen.metrics_md(), encoding="utf-8")
    (tmp_path / "docs" / "config.md").write_text(docgen.config_md() + "edited\n", encoding="utf-8")
    assert docgen.stale(str(tmp_path)) == ["docs/config.md"]


def test_every_metric_and_config_field_is_listed():
    metrics = docgen.metrics_md()
    for d in telemetry.DECLARED:
        assert f"`{telemetry.PREFIX}{d.name}`" in metrics
    cfg = docgen.config_md()
    # a field with its type, default, hot-reload column and its comment as description
    assert ("| `decision_wait` | duration | `30s` | yes |" in cfg)
    assert "| `receivers` | [Receivers](#receivers) | see its section | restart |" in cfg
    assert "## DecisionCache" in cfg and "| `sampled` | int (>= 0) | `100000` | restart |" in cfg
    for name in Sampler.__struct_fields__:
        assert f"| `{name}` |" in cfg


def test_metrics_are_declared_for_a_type_checker():
    # declared in the class body (not setattr): a checker and an IDE see
    # every metric; at run time each is a plain instance attribute
    import inspect
    body = inspect.getsource(telemetry.Metrics)
    names = [d.name for d in telemetry.DECLARED]
    assert len(names) == len(set(names)) == len(telemetry.METRICS)
    m = telemetry.Metrics()
    for name in names:
        assert f"    {name} = " in body
        assert not hasattr(telemetry.Metrics, name)
        assert vars(m)[name] is getattr(m, name)


def test_every_config_field_has_a_description():
    assert docgen.undocumented() == [], (
        "add a one-line comment on each of these fields in its struct, then regenerate "
        "with `python -m traceo_sampler.docgen`")


class Probe(msgspec.Struct):
    # described above
    a: int = 0
    b: int = 0   # described after
    c: int = 0


def test_check_fails_on_a_field_without_description(monkeypatch, capsys):
    assert docgen.undocumented([Probe]) == ["Probe.c"]
    monkeypatch.setattr(docgen, "undocumented", lambda structs=None: ["Probe.c"])
    monkeypatch.setattr(docgen, "stale", lambda root=docgen.ROOT: [])
    assert docgen.main(["--check"]) == 1
    assert "Probe.c has no description" in capsys.readouterr().err
