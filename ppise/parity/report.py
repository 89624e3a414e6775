"""Rows of the parity table: what was compared (paddleclas side vs ppise side), the largest
absolute difference, the tolerance and PASS / FAIL. NOTE rows carry facts a reader must see
next to the numbers (a head that differs, a config value the check had to fix), never failing.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np

from ..utils.fileio import atomic_write

PASS, FAIL, NOTE = "PASS", "FAIL", "NOTE"
FEATURE_TOL = 1e-5  # largest |difference| of two features (or inputs) that counts as equal


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


def array_row(section: str, item: str, a: np.ndarray, b: np.ndarray, paddleclas: Optional[str] = None,
              ppise: Optional[str] = None, detail: str = "") -> Row:
    """Two arrays within FEATURE_TOL; the columns describe them unless given."""
    return compare_row(section, item, describe_array(a) if paddleclas is None else paddleclas,
                       describe_array(b) if ppise is None else ppise, max_abs_diff(a, b), FEATURE_TOL, detail)


def error_row(section: str, err: BaseException) -> Row:
    """A section that could not run is a FAIL, with the reason in the table."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return Row(section, "could not run", "", "", None, None, FAIL, f"{type(err).__name__}: {msg}")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| in float64; different shapes are an infinite difference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def describe_array(x: np.ndarray) -> str:
    x = np.asarray(x)
    return f"{list(x.shape)} max|x| {float(np.max(np.abs(x))) if x.size else 0.0:.3g}"


def _fmt_num(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return str(x) if not math.isfinite(x) else "0" if x == 0 else f"{x:.1e}"


def format_table(rows: List[Row]) -> str:
    """Fixed-width text table, then numbered notes for rows that carry a detail."""
    notes = [r.detail for r in rows if r.detail]
    marks = iter(range(1, len(notes) + 1))
    body = [(r.section, r.item, r.paddleclas, r.ppise, _fmt_num(r.diff), _fmt_num(r.tol),
             f"{r.status} [{next(marks)}]" if r.detail else r.status) for r in rows]
    head = ("section", "check", "paddleclas", "ppise", "max|diff|", "tol", "result")
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    out = [" | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in [head, *body]]
    out.insert(1, "-+-".join("-" * w for w in widths))
    failed, passed = sum(r.failed for r in rows), sum(r.status == PASS for r in rows)
    others = len(rows) - passed - failed
    out.append(f"{passed} passed, {failed} failed" + (f", {others} notes" if others else ""))
    if notes:
        out += [""] + [f"[{i}] {t}" for i, t in enumerate(notes, start=1)]
    return "\n".join(out)


def write_json(rows: List[Row], path: str, extra: dict) -> None:
    """Rows as JSON (non-finite numbers become strings), written atomically."""
    def clean(x: Optional[float]):
        return str(x) if x is not None and not math.isfinite(x) else x

    dicts = [dict(asdict(r), diff=clean(r.diff), tol=clean(r.tol)) for r in rows]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, encoding="utf-8") as f:
        json.dump({"rows": dicts, **extra, "failed": sum(r.failed for r in rows)}, f, indent=2)
