"""``status_code``: keep a trace where any span has one of the status codes."""
from typing import Literal

from ..cfgtypes import _Base
from .base import NO, YES

TYPE = "status_code"


class StatusCodeCfg(_Base):
    # kept when any span's status code is one of these (OK, ERROR, UNSET); an empty list is
    # refused
    status_codes: list[Literal["OK", "ERROR", "UNSET"]]


Config = StatusCodeCfg


def check(c: StatusCodeCfg, path: str, problems: list[str]) -> None:
    # the Collector: "status_codes must not be empty"
    if not c.status_codes:
        problems.append(f"{path}.status_codes: must not be empty")

CODES = {"UNSET": 0, "OK": 1, "ERROR": 2}


class StatusCode:
    def __init__(self, name: str, status_codes: list[str]):
        self.name = name
        self.mask = 0
        for c in status_codes:
            self.mask |= 1 << CODES[c]

    def attribute_keys(self) -> set[str]:
        return set()

    def evaluate(self, trace):
        return YES if trace.status_mask & self.mask else NO


def build(cfg, build_sub, clock=None):
    return StatusCode(cfg.name, cfg.status_code.status_codes)
