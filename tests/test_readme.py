"""Every Python block of the README runs as written and prints what the README says."""
import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def numbers(text, label):
    """The number printed after `label` on its line."""
    return float(re.search(re.escape(label) + r"\s*(-?[0-9.]+(?:e[-+]?[0-9]+)?)", text).group(1))


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs(index):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {"__name__": "readme"})
    out = printed.getvalue()
    checked = 0
    if "least-squares solution" in out:
        checked += 1
        assert numbers(out, "least-squares solution:") < 1e-10
        assert numbers(out, "difference from uncoded GD:") < 1e-12
        assert numbers(out, "virtual seconds: crc") < numbers(out, ", naive")
    if "test accuracy" in out:
        checked += 1
        assert numbers(out, "test accuracy:") > 0.9
        assert numbers(out, "ridge solution:") < 1e-3
    if "decode residual" in out:
        checked += 1
        assert numbers(out, "decode residual max|a B - 1|:") < 1e-12
        assert numbers(out, "error of the decoded gradient sum:") < 1e-12
    assert checked == 1, f"README block {index} printed nothing this test knows to check:\n{out}"


def test_every_relative_link_exists():
    for document in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#]+)\)", document.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (document.parent / target).exists(), f"{document.name}: {target}"
