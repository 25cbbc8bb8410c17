"""Write docs/results.md: every committed results table under benchmarks/results/, collected.

    python scripts/results_doc.py [--check]

For each ``benchmarks/results/*.md`` (and one level of subfolders), in name order: its title,
a link to it, the command that produced it (its first fenced block) and its first table, copied
as they are; nothing is typed by hand, so every number in the page comes from a committed
results file. ``--check`` exits 1 when the page is not what the results files give (the test
suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"


def _first_block(lines: list[str]) -> list[str]:
    """The first fenced block of a file, fences included (empty if none)."""
    for start, line in enumerate(lines):
        if line.startswith("```"):
            for end in range(start + 1, len(lines)):
                if lines[end].startswith("```"):
                    return lines[start : end + 1]
    return []


def _first_table(lines: list[str]) -> list[str]:
    """The first run of consecutive table lines (``| ...``)."""
    table: list[str] = []
    for line in lines:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return table


def render() -> str:
    out = ["# Results (generated)", "",
           "Every table below is copied from the file it links to by "
           "`python scripts/results_doc.py`; read the file for the setting, the other tables "
           "and the notes. What the numbers mean for the product is in [status.md](status.md).", ""]
    files = sorted([*RESULTS.glob("*.md"), *RESULTS.glob("*/*.md")],
                   key=lambda p: str(p.relative_to(RESULTS)))
    for path in files:
        lines = path.read_text().splitlines()
        title = next((line[2:] for line in lines if line.startswith("# ")), path.stem)
        relative = path.relative_to(ROOT)
        out += [f"## {title}", "", f"[`{relative}`](../{relative})", ""]
        block, table = _first_block(lines), _first_table(lines)
        if block:
            out += [*block, ""]
        if table:
            out += [*table, ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is out of date: run python scripts/results_doc.py")
            sys.exit(1)
        return
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)} ({len(text):,} bytes)")


if __name__ == "__main__":
    main()
