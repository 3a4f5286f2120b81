"""Every test says what behaviour it pins down: each `test_*` function under tests/ and
bench/tests has a docstring, and neither it nor its module's docstring names an issue number
(the behaviour outlives the tracker; say it instead)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_DIRS = (ROOT / "tests", ROOT / "bench" / "tests")

# "issue 17", "Issue 17's", "issues 16 and 17", "#12": ticket references, not behaviour.
ISSUE_NUMBER = re.compile(r"\bissues? ?#?\d+|(?<![\w&])#\d+\b", re.IGNORECASE)


def problems(source: str, name: str) -> list[str]:
    """What is wrong with the test docstrings of one module's source, one line each."""
    tree = ast.parse(source)
    found = []
    module_doc = ast.get_docstring(tree)
    if module_doc and ISSUE_NUMBER.search(module_doc):
        found.append(f"{name}: module docstring names an issue number")
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not node.name.startswith("test_"):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            found.append(f"{name}:{node.lineno} {node.name} has no docstring")
        elif ISSUE_NUMBER.search(doc):
            found.append(f"{name}:{node.lineno} {node.name}'s docstring names an issue number")
    return found


def test_every_test_has_a_docstring_without_issue_numbers() -> None:
    """Each `test_*` function in tests/ and bench/tests has a docstring, and no test docstring
    or test module docstring refers to an issue number instead of the behaviour."""
    found = []
    for folder in TEST_DIRS:
        for path in sorted(folder.rglob("*.py")):
            found += problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


def test_the_check_flags_a_missing_docstring_and_issue_numbers() -> None:
    """The checker is not vacuous: a test without a docstring, a test docstring or a module
    docstring citing an issue (by "issue" and its number, or by a hash and its number) are
    each reported; one that only says the behaviour (a hex colour, an `issue_id` field) is
    not."""
    source = '''"""Covers issue 4."""
def test_bare():
    pass
def test_cites():
    """Issue 17's rule holds."""
class TestGroup:
    async def test_hash(self):
        """As asked in #12, the sum is kept."""
def test_fine():
    """The chart draws in #2563eb and keeps the issue_id field."""
def helper():
    pass
'''
    assert problems(source, "m.py") == [
        "m.py: module docstring names an issue number",
        "m.py:2 test_bare has no docstring",
        "m.py:4 test_cites's docstring names an issue number",
        "m.py:7 test_hash's docstring names an issue number",
    ]
