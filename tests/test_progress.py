"""Progress reporting: a bar on a terminal, plain lines in a pipe, nothing when off."""

import io

from jaxrobust import _progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _drive(monkeypatch, stream, progress):
    monkeypatch.setattr("sys.stderr", stream)
    with _progress.bar(total=3, desc="work", unit="step", progress=progress) as bar:
        for _ in range(3):
            bar.set_postfix(loss="0.5")
            bar.update()
    return stream.getvalue()


def test_terminal_gets_a_bar_pipe_gets_lines_off_gets_nothing(monkeypatch):
    text = _drive(monkeypatch, _Terminal(), True)
    assert "\r" in text and "work" in text and "3/3" in text and "loss=0.5" in text
    text = _drive(monkeypatch, io.StringIO(), True)
    assert "\r" not in text and "\x1b" not in text
    lines = text.strip().splitlines()
    assert lines[0].startswith("work:") and "0/3" in lines[0]  # the first line, then
    assert "3/3" in lines[-1] and "loss=0.5" in lines[-1]  # at most one per interval, the last
    assert len(lines) <= 3
    assert _drive(monkeypatch, io.StringIO(), False) == ""


def test_library_default_is_off_until_set(monkeypatch):
    assert _progress.enabled() is False  # a library call does not print unasked
    assert _drive(monkeypatch, io.StringIO(), None) == ""
    monkeypatch.setattr(_progress, "_default", True)
    assert "3/3" in _drive(monkeypatch, io.StringIO(), None)
