"""Read scaling data from any CSV (published or external results) into analysis rows.

One line per run. Columns are named by the caller: the FLOPs column (`x_col`), the metric
(`y_col`), and optionally model size N (`n_col`), training tokens D (`d_col`), a run id (`id_col`)
and replicate-group columns (`group_cols`, e.g. the config columns other than the seed). Without a
FLOPs column but with N and D, C = flops_per_nd * N * D (stated in the FLOPs convention).

Rows come back as `sweeps.rows.RunRow`s, like a sweep's (`sweeps.status.completed_rows`): the
run id, the FLOPs as given, the metric, N (`params_non_embedding`), D (`tokens`) and the
replicate group, so they go through the same selection and checks as a sweep's. Empty, "nan" or "inf" metric cells are kept as NaN, so the report lists those runs as
excluded (diverged runs are data, not a reason to refuse the file); any other text where a
number belongs is an error naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from sweeps.rows import RunRow

_MISSING = {"", "nan", "na", "n/a", "null", "none"}  # lower-cased; "inf" parses as a float


def _number(text: str | None, path: Path, line: int, col: str) -> float:
    t = (text or "").strip()
    if t.lower() in _MISSING:
        return math.nan
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{path}, line {line}, column {col!r}: {text!r} is not a number; correct it, or leave "
                         "the cell empty to list that run as excluded") from None


def load_csv(
    path: str | Path,
    *,
    y_col: str,
    x_col: str = "flops",
    n_col: str | None = None,
    d_col: str | None = None,
    id_col: str | None = None,
    group_cols: Sequence[str] = (),
    flops_per_nd: float | None = None,
) -> tuple[list[RunRow], str | None]:
    """Rows for `analysis.report` / `analysis.study`, and the FLOPs convention when C was derived.

    `flops_per_nd` (e.g. 6) derives C = k N D when the file has no `x_col`; when the file has
    FLOPs it is not used here (the frontier's C = k N D is set in the analysis options).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--csv {p}: no such file")
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            lines = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{p}: not a readable UTF-8 CSV file ({exc}); export it as CSV with a header line") from None
    if not columns:
        raise ValueError(f"{p} is empty: it needs a header line naming the columns")
    derive = x_col not in columns
    needed = [y_col, *(c for c in (n_col, d_col, id_col) if c), *group_cols]
    if derive:
        if not (n_col and d_col and flops_per_nd):
            raise ValueError(
                f"{p} has no FLOPs column {x_col!r} (columns: {columns}); name it with --x-col, or give "
                "--n-col, --d-col and a numeric --flops-per-nd to use C = k N D"
            )
    else:
        needed.append(x_col)
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{p} has no column(s) {missing}; its columns are {columns}")
    if not lines:
        raise ValueError(f"{p} has a header but no runs")

    rows = []
    for i, raw in enumerate(lines):
        line = i + 2  # 1-based, after the header
        y = _number(raw[y_col], p, line, y_col)
        n = _number(raw[n_col], p, line, n_col) if n_col else None
        d = _number(raw[d_col], p, line, d_col) if d_col else None
        if derive:
            flops = float(flops_per_nd) * n * d  # type: ignore[arg-type, operator]
        else:
            flops = _number(raw[x_col], p, line, x_col)
        rows.append(RunRow(
            run_id=(raw[id_col] or "").strip() if id_col else f"row{line}",
            metrics={y_col: y},
            flops=flops, tokens=d, params_non_embedding=n,
            replicate_group="|".join((raw[c] or "").strip() for c in group_cols) if group_cols else None,
        ))
    convention = f"C = {float(flops_per_nd):g} N D (derived from columns {n_col!r}, {d_col!r})" if derive else None
    return rows, convention
