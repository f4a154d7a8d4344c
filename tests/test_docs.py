"""The README's support matrix is the one the code generates."""

import re
from pathlib import Path

from promptscale.support import matrix_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_support_matrix_is_generated_one():
    text = README.read_text()
    match = re.search(r"<!-- support-matrix -->\n(.*?)<!-- /support-matrix -->", text, re.S)
    assert match, "README lacks the support-matrix markers"
    assert match.group(1) == matrix_markdown()


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make test" in text and "make demo" in text
