"""Every Python snippet in the README runs verbatim in a fresh interpreter."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snippets() -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    # indented blocks (inside a list item) lose their indentation
    return [re.sub(rf"^{indent}", "", code, flags=re.M) for indent, code in blocks]


def test_the_readme_has_snippets():
    assert len(_snippets()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs_in_a_fresh_interpreter(index, tmp_path):
    code = _snippets()[index]
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"README snippet {index + 1} failed:\n{code}\n{proc.stderr}"
