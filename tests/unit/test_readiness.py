"""/readyz rules: receivers listening, exporters reachable, buffer below
90 % of its memory limit."""
import asyncio

from traceo_sampler import config
from traceo_sampler.server import App


def test_readiness_rules(tmp_path):
    async def main():
        cfg = config.parse({"sampler": {"memory_limit_mib": 1},
                            "exporters": {"file": {"path": str(tmp_path / "k.jsonl")}}})
        app = App(cfg)
        ok, why = app.ready()
        assert not ok and "receivers" in why
        app.receivers.append(object())
        assert app.ready() == (True, "")
        buf = app.pipeline.buffer
        buf.nbytes = int(0.95 * buf.memory_limit)
        ok, why = app.ready()
        assert not ok and "90%" in why
        buf.nbytes = 0
        app.exporters[0].reachable = False
        app.exporters[0].last_error = "connection refused"
        ok, why = app.ready()
        assert not ok and "file" in why and "connection refused" in why
    asyncio.run(main())
