"""Plain-text tables for the terminal views of eval reports and comparisons."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["clip", "text_table"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The header and rows as lines of left-aligned columns two spaces apart."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


def clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with '...'."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
