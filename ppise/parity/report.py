"""Rows of the parity table, the table itself and its JSON form.

A row says what was compared (paddleclas side vs ppise side), the largest absolute
difference, the tolerance, and PASS / FAIL. NOTE rows carry facts a reader must see next
to the numbers (a head that differs, a config value the check had to fix) but never fail.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional

import numpy as np

from ..utils.fileio import atomic_write

PASS, FAIL, NOTE = "PASS", "FAIL", "NOTE"


@dataclass
class Row:
    section: str
    item: str
    paddleclas: str = ""
    ppise: str = ""
    diff: Optional[float] = None
    tol: Optional[float] = None
    status: str = NOTE
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def compare_row(section: str, item: str, paddleclas: str, ppise: str, diff: float, tol: float,
                detail: str = "") -> Row:
    """PASS iff ``diff <= tol`` (a NaN difference fails)."""
    ok = diff is not None and math.isfinite(diff) and diff <= tol
    return Row(section, item, paddleclas, ppise, float(diff), tol, PASS if ok else FAIL, detail)


def check_row(section: str, item: str, paddleclas: str, ppise: str, ok: bool, detail: str = "") -> Row:
    """A yes/no comparison (key sets, shapes): no numeric difference."""
    return Row(section, item, paddleclas, ppise, None, None, PASS if ok else FAIL, detail)


def error_row(section: str, err: BaseException) -> Row:
    """A section that could not run is a FAIL, with the reason in the table."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return Row(section, "could not run", "", "", None, None, FAIL, f"{type(err).__name__}: {msg}")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| in float64; different shapes are an infinite difference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def describe_array(x: np.ndarray) -> str:
    x = np.asarray(x)
    return f"{list(x.shape)} max|x| {float(np.max(np.abs(x))) if x.size else 0.0:.3g}"


def _fmt_num(x: Optional[float]) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return "0" if x == 0 else f"{x:.1e}"


def format_table(rows: Iterable[Row]) -> str:
    """Fixed-width text table, then numbered notes for rows that carry a detail."""
    rows = list(rows)
    head = ("section", "check", "paddleclas", "ppise", "max|diff|", "tol", "result")
    body = [(r.section, r.item, r.paddleclas, r.ppise, _fmt_num(r.diff), _fmt_num(r.tol), r.status) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    line = lambda cells: " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [line(head), "-+-".join("-" * w for w in widths)]
    notes: List[str] = []
    for r, cells in zip(rows, body):
        if r.detail:
            notes.append(r.detail)
            cells = cells[:-1] + (f"{r.status} [{len(notes)}]",)
        out.append(line(cells))
    failed = sum(r.failed for r in rows)
    passed = sum(r.status == PASS for r in rows)
    out.append(f"{passed} passed, {failed} failed" + (f", {len(rows) - passed - failed} notes" if len(rows) > passed + failed else ""))
    if notes:
        out.append("")
        out.extend(f"[{i}] {n}" for i, n in enumerate(notes, start=1))
    return "\n".join(out)


def write_json(rows: Iterable[Row], path: str, extra: Optional[dict] = None) -> str:
    """Rows as JSON (non-finite numbers become strings), written atomically."""
    def clean(r: Row) -> dict:
        d = asdict(r)
        for k in ("diff", "tol"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d

    payload = {"rows": [clean(r) for r in rows], **(extra or {})}
    payload["failed"] = sum(r["status"] == FAIL for r in payload["rows"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    return path
