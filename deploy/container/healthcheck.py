#!/opt/traceo-sampler/bin/python
"""The image's HEALTHCHECK: exit 0 when the admin endpoint answers /healthz.

TRACEO_SAMPLER_HEALTH_URL overrides the URL (a mounted config that moves the
admin endpoint off port 9464 sets it too)."""
import os
import sys
import urllib.request

url = os.environ.get("TRACEO_SAMPLER_HEALTH_URL", "http://127.0.0.1:9464/healthz")
try:
    with urllib.request.urlopen(url, timeout=2) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said on stderr
    print(f"healthcheck {url}: {exc}", file=sys.stderr)
    sys.exit(1)
