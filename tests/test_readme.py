"""The README's library example runs and prints what it claims."""
import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_codes_example_runs_and_decodes_exactly():
    text = README.read_text()
    section = text[text.index("## Codes"):]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, "README.md", "exec"), {})
    assert float(printed.getvalue()) < 1e-12
