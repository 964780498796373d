"""The one exception type users see.

Every problem a user can fix (a missing path, a budget out of range, a selection made on
another data set) raises :class:`SampleSiftError` with a one-line message that names the
problem and says what to do. The CLI prints that line and exits non-zero; the app shows it
on the page; anything else is a bug and keeps its traceback.

:func:`terminate_as_interrupt` turns SIGTERM into :class:`KeyboardInterrupt`, the interruption
every run already handles.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


class SampleSiftError(ValueError):
    """A problem with the user's input, data or workspace, explained in one line."""


class NonFiniteLossError(SampleSiftError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


def terminate_as_interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler that raises :class:`KeyboardInterrupt`, so a terminated run ends ``interrupted``.

    Installed by the CLI and by sweep worker processes (``signal.signal(signal.SIGTERM,
    terminate_as_interrupt)``): the interrupt unwinds like Ctrl-C, so the run's status and
    checkpoint are written instead of the process dying silently.
    """
    raise KeyboardInterrupt


def require(condition: bool, message: str) -> None:
    """Raise :class:`SampleSiftError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SampleSiftError(message)


def is_whole(value: object) -> bool:
    """An integer, and not a bool (JSON ``true`` must not pass for 1)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite real number (not a bool, not NaN or infinite)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
