"""Parity with PaddleClas: ``tools/parity_check.py`` and the pieces it is made of.

model.py (RecModel features), deploy.py (RecPredictor / predict_rec.py / dygraph),
metrics.py + metrics_reference.py (retrieval metrics vs an independent PaddleClas
re-implementation), roundtrip.py (checkpoints both ways), report.py (the table).
Importing this package is cheap: paddle and paddleclas load only when a check runs.
"""
from .context import ParityOptions
from .report import Row, format_table

__all__ = ["ParityOptions", "Row", "format_table", "run_parity"]


def run_parity(*args, **kwargs):
    from .runner import run_parity as _run

    return _run(*args, **kwargs)
