"""What the widgets' matplotlib charts share: a transparent background and one mid
grey for text, ticks and frames, so a chart reads on JupyterLab's light and dark
theme alike (the page's colour shows through)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

__all__ = ["INK", "themed_png"]

INK = "#8c8c8c"  # a mid grey that reads on light and dark notebook backgrounds


def themed_png(fig: Any, axes: Iterable[Any]) -> bytes:
    """`fig` as PNG bytes, transparent, with `axes` drawn in :data:`INK`."""
    fig.patch.set_alpha(0)
    for ax in axes:
        ax.set_facecolor("none")
        ax.tick_params(labelsize=8, colors=INK)
        for spine in ax.spines.values():
            spine.set_color(INK)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", transparent=True)
    return buffer.getvalue()
