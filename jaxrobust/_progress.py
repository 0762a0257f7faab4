"""Progress of long work, through tqdm: bars on a terminal, plain lines elsewhere.

Every long stage (training, the sweep, IG chunks, the counterfactual searches, the
gallery, the benchmarks) reports through `bar(...)`. What the user sees:

* stderr is a terminal: a tqdm bar (rate, ETA, postfix such as the loss);
* stderr is a pipe or a file (CI, logs): plain lines, at most one every
  `PLAIN_INTERVAL_S` seconds plus the last, with the same fields, no carriage returns;
* disabled: nothing.

Library calls take `progress: bool | None`; `None` means the process default, which is
off (a library does not print unasked) until `set_default(True)`, which the command
line does unless `--quiet`.
"""

from __future__ import annotations

import io
import os
import sys

from tqdm import tqdm

PLAIN_INTERVAL_S = 10.0
_default = False


def set_default(on: bool) -> None:
    """Turns progress on or off for every call that passes `progress=None`."""
    global _default
    _default = bool(on)


def enabled(progress: bool | None = None) -> bool:
    """Whether a call with this `progress` argument reports."""
    return _default if progress is None else bool(progress)


class _Lines(io.TextIOBase):
    """A tqdm output stream that turns each refresh into one plain line."""

    def __init__(self, stream):
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        line = text.replace("\r", "").replace("\x1b[A", "").strip()
        if line and line != self._last:
            self._last = line
            self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


class _PlainBar(tqdm):
    """tqdm for a pipe: a refresh asked for by `set_postfix` and the like is printed
    only when `PLAIN_INTERVAL_S` have passed since the last line, or when done."""

    def refresh(self, *args, **kwargs):
        now = self._time()
        done = self.total is not None and self.n >= self.total
        if not done and now - getattr(self, "_last_line", -1e9) < PLAIN_INTERVAL_S:
            return False
        self._last_line = now
        return super().refresh(*args, **kwargs)


def bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
        progress: bool | None = None, leave: bool = True, **kwargs) -> tqdm:
    """A tqdm progress bar for `iterable` (or `total` manual `update`s).

    Args:
        iterable: what to iterate over (optional).
        total: the number of steps, when not `len(iterable)`.
        desc: what is in progress (`"sweep median_blur"`).
        unit: what one step is.
        progress: True / False, or None for the process default (`set_default`).
        leave: keep the finished bar on the terminal.
        **kwargs: passed to tqdm (`unit_scale`, `postfix`, ...).

    Returns:
        A tqdm object; disabled (prints nothing, costs nothing) when progress is off.
    """
    if not enabled(progress):
        return tqdm(iterable, total=total, disable=True)
    stream = sys.stderr
    if stream.isatty():
        try:  # a pseudo-terminal without a size (script, some CI shells) reports 0 columns
            sized = os.get_terminal_size(stream.fileno()).columns > 0
        except (OSError, ValueError, AttributeError):
            sized = False
        # (tqdm then hides every bar: it thinks the screen has no rows)
        width = {"dynamic_ncols": True} if sized else {"ncols": 100, "nrows": 20}
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream,
                    **width, **kwargs)
    return _PlainBar(iterable, total=total, desc=desc, unit=unit, leave=True, file=_Lines(stream),
                mininterval=PLAIN_INTERVAL_S, maxinterval=PLAIN_INTERVAL_S, ascii=True,
                ncols=100, **kwargs)


def write(message: str, *, progress: bool | None = None) -> None:
    """A status line (e.g. "compiling ...") that does not break a running bar."""
    if enabled(progress):
        tqdm.write(message, file=sys.stderr)
