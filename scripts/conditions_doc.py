"""Write the table of condition subjects in examples/README.md from service/domain/subjects.py.

The table sits between two marker lines; edit the entries of `SUBJECTS`, then run
`python scripts/conditions_doc.py` (tests/unit/domain/test_subjects.py fails while they differ).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "examples/README.md"
BEGIN = ("<!-- conditions: generated from service/domain/subjects.py by "
         "scripts/conditions_doc.py; do not edit -->")
END = "<!-- end of conditions -->"


def render() -> str:
    """The markdown table: one row per subject (example, doc, the keys it takes besides)."""
    from service.domain.subjects import SUBJECTS

    rows = ["| condition | holds when | also takes |", "| --- | --- | --- |"]
    for subject in SUBJECTS.values():
        extra = ["operators"] if subject.ops else []
        for key, schema in subject.keys.items():
            extra.append(f"`{key}`: {schema.get('description', '')}")
        cells = (f"`{subject.example}`", subject.doc, "; ".join(extra))
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def replace_block(text: str, table: str) -> str:
    """`text` with the lines between the markers replaced by `table`."""
    head, begin, rest = text.partition(BEGIN + "\n")
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{TARGET.name} lacks the marker lines {BEGIN!r} ... {END!r}")
    return head + begin + table + end + tail


def main() -> None:
    sys.path.insert(0, str(ROOT))
    TARGET.write_text(replace_block(TARGET.read_text(), render()))
    print(TARGET.relative_to(ROOT))


if __name__ == "__main__":
    main()
