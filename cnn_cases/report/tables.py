"""The one fixed-width text table every report in the project prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    align: str | None = None,
    rules: Sequence[int] = (),
) -> str:
    """Columns padded to their widest cell, two spaces apart.

    `align` has one character per column, "<" (left) or ">" (right); by default the first
    column is left-aligned and the others right-aligned. Cells are `str()`-ed. `rules` are row
    indices (0 = the header) after which a line of dashes is drawn; the header always gets one.
    """
    table = [[str(c) for c in header], *([str(c) for c in r] for r in rows)]
    n = len(header)
    if any(len(r) != n for r in table):
        bad = next(r for r in table if len(r) != n)
        raise ValueError(f"a row has {len(bad)} cells, the header {n}: {bad}")
    align = align or "<" + ">" * (n - 1)
    if len(align) != n or set(align) - {"<", ">"}:
        raise ValueError(f"align={align!r}: need {n} characters, each '<' or '>'")
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    lines = [
        "  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths, strict=True)).rstrip()
        for r in table
    ]
    rule = "-" * max(len(line) for line in lines)
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i == 0 or i in rules:
            out.append(rule)
    return "\n".join(out)
