"""A subset of the OpenTelemetry Transformation Language for conditions,
as the Collector's ``tail_sampling`` ``ottl_condition`` policy uses it
(pkg/ottl v0.161.0 with the span and spanevent contexts): grammar.py
parses (lark), compiler.py turns a condition into Python closures over
paths.py (the contexts' paths) and functions.py (converters), values.py
compares the way OTTL compares.

Public: ``ConditionSequence`` (one list of conditions: any of them holds,
under an error mode), ``CompileError``, ``EvalError``, ``Ctx``,
``FUNCTIONS`` and ``paths_supported()`` for the documentation.
"""
from __future__ import annotations

import logging
import time

from .compiler import Compiler
from .functions import FUNCTIONS
from .paths import CONTEXT_NAMES, CompileError, Ctx, EvalError

ERROR_MODES = ("ignore", "silent", "propagate")

log = logging.getLogger("traceo_sampler.ottl")


class ConditionError(CompileError):
    """A condition of a list that does not compile: ``index`` in the list."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


class ConditionSequence:
    """ottl.ConditionSequence with the Or logic: ``eval(ctx)`` is true when
    one condition holds. Under ``propagate`` the first failing condition
    raises EvalError; under ``ignore`` it is logged and skipped; under
    ``silent`` skipped."""

    __slots__ = ("_last_warn", "constant", "error_mode", "fns", "texts")

    def __init__(self, conditions: list[str], context: str, error_mode: str = "silent"):
        if error_mode not in ERROR_MODES:
            raise ValueError(f"unknown error mode {error_mode}")
        comp = Compiler(context)
        self.texts = list(conditions)
        self.error_mode = error_mode
        fns = []
        always = False
        for i, text in enumerate(conditions):
            try:
                f = comp.condition(text)
            except CompileError as exc:
                raise ConditionError(i, str(exc)) from None
            if f is True:
                always = True
            elif f is not False:
                fns.append((text, f))
        self.fns = tuple(fns)
        # a literally true condition holds for every span; one literally
        # false never does
        self.constant = True if always else (False if not fns else None)
        self._last_warn = 0.0

    def eval(self, ctx: Ctx) -> bool:
        if self.constant is not None:
            return self.constant
        for text, f in self.fns:
            try:
                if f(ctx):
                    return True
            except EvalError as exc:
                if self.error_mode == "propagate":
                    raise EvalError(f"failed to eval condition: {text}, {exc}") from None
                if self.error_mode == "ignore":
                    self._warn(text, exc)
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                # a value Python refuses where Go would have an answer or
                # an error: an error of the condition, never of the process
                if self.error_mode == "propagate":
                    raise EvalError(f"failed to eval condition: {text}, {exc}") from None
                if self.error_mode == "ignore":
                    self._warn(text, exc)
        return False

    def _warn(self, text: str, exc: Exception) -> None:
        # the Collector logs every failure at warn; once a minute is enough
        # to be seen without flooding the log from the decision loop
        now = time.monotonic()
        if now - self._last_warn >= 60.0:
            self._last_warn = now
            log.warning("failed to eval condition %r: %s", text, exc)


def paths_supported() -> dict[str, tuple[str, ...]]:
    """Context name -> the contexts a condition of it may read."""
    return dict(CONTEXT_NAMES)


__all__ = [
    "ERROR_MODES",
    "FUNCTIONS",
    "CompileError",
    "ConditionError",
    "ConditionSequence",
    "Ctx",
    "EvalError",
    "paths_supported",
]
