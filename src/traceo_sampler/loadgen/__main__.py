"""``python -m traceo_sampler.loadgen``: the same as ``traceo-sampler loadgen``."""
import sys

from .cli import main

sys.exit(main())
