"""Docs that run: every Python snippet of the README runs as written, from the repository's root in a fresh
interpreter, or names its twin test (`<!-- twin: tests/FILE.py::TEST -->` above it) for what needs more than one
process (torchrun) or a running server. The full model's folder (`cogview-base-hf`), which is not here, is played by
the converted golden checkpoint: the same code at a tiny size."""

import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPET = re.compile(r"(?:<!-- twin: (?P<twin>\S+) -->\s*\n)?(?P<indent>[ \t]*)```python\n(?P<code>.*?)\n(?P=indent)```", re.S)
SNIPPETS = [(match.group("twin"), match.group("code"), match.group("indent")) for match in SNIPPET.finditer(README)]


def test_the_readme_has_snippets_and_each_twin_exists():
    assert len(SNIPPETS) >= 4
    for twin, _, _ in SNIPPETS:
        if twin is not None:
            file, _, name = twin.partition("::")
            assert re.search(rf"^def {name}\(", (ROOT / file).read_text(), re.M), f"the README names a missing twin: {twin}"


@pytest.mark.slow
@pytest.mark.parametrize("number", [i for i, (twin, _, _) in enumerate(SNIPPETS) if twin is None])
def test_readme_snippet_runs(number, golden_model_dir, tmp_path):
    _, code, indent = SNIPPETS[number]
    code = "\n".join(line.removeprefix(indent) for line in code.splitlines()).replace("cogview-base-hf", str(golden_model_dir))
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README snippet {number}:\n{code}\n{result.stderr[-3000:]}"
