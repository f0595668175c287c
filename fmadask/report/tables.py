"""Markdown tables of results."""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, columns: Sequence[str], headers: Sequence[str],
                   digits: int = 3) -> str:
    """A GitHub-flavoured markdown table of some columns of ``frame``.

    Parameters
    ----------
    frame : pandas.DataFrame
        One table row per frame row, in order.
    columns : sequence of str
        Columns of ``frame`` to show.
    headers : sequence of str
        Header text of each shown column.
    digits : int
        Decimals of float cells; NaN is shown as an en dash.

    Returns
    -------
    str
        The table, ending with a newline. Numeric columns are right-aligned.
    """
    if len(columns) != len(headers):
        raise ValueError("columns and headers must have the same length")
    align = ["---:" if pd.api.types.is_numeric_dtype(frame[c]) else ":---" for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    for row in frame[list(columns)].itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return "\n".join(lines) + "\n"
