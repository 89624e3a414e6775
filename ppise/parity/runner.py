"""Run the parity sections and collect their rows.

``model`` always runs first and returns a ``ModelResult``: the weights file every later
section uses (the exact tensors ppise loaded, after any ``--perturb``) and the dygraph
reference features. Each later section gets the read-only context and that result.
A section that crashes becomes a FAIL row with the reason; the others still run, so the
table is always complete. The temporary work folder is removed after a clean run and kept
(its path logged) when anything failed, for the child processes' logs. User mistakes
found before any work (bad config, missing weights) are raised as ppise errors instead.
"""
from __future__ import annotations

import shutil
import time
from typing import Any, Callable, List, Optional, Tuple

from ..errors import ConfigError, PpiseError
from ..utils.logger import logger
from .context import ParityContext, ParityOptions, build_context
from .report import Row, error_row

SECTIONS = ("model", "deploy", "metrics", "roundtrip")


def check_options(opts: ParityOptions) -> None:
    unknown = [s for s in opts.sections if s not in SECTIONS]
    if unknown or not opts.sections:
        raise ConfigError(f"--sections {','.join(opts.sections)}: choose from {','.join(SECTIONS)}")
    if opts.device not in ("cpu", "gpu"):
        raise ConfigError(f"--device must be cpu or gpu, got {opts.device!r}")
    if opts.weights:
        from ..utils.weights import resolve_weights_path

        resolve_weights_path(opts.weights, "--weights")
    if opts.expect_market is not None and len(opts.expect_market) != 2:
        raise ConfigError("--expect-market takes two numbers: MAP RANK1 (percent)")


def _attempt(name: str, fn: Callable[[], Any]) -> Tuple[Any, Optional[Row]]:
    """``(fn(), None)``, or ``(None, FAIL row)`` when it raised: one section never stops the table."""
    start = time.time()
    try:
        return fn(), None
    except Exception as err:  # noqa: BLE001 - reported as a FAIL row, the table stays whole
        logger.exception(f"parity section {name} failed")
        return None, error_row(name, err)
    finally:
        logger.info(f"parity section {name}: {time.time() - start:.1f}s")


def _run_sections(ctx: ParityContext) -> List[Row]:
    from .deploy import run_deploy_section
    from .metrics import run_metrics_section
    from .model import run_model_section
    from .roundtrip import run_roundtrip_section

    later = {"deploy": run_deploy_section, "metrics": run_metrics_section, "roundtrip": run_roundtrip_section}
    wanted = ctx.options.sections
    model, failure = _attempt("model", lambda: run_model_section(ctx))
    rows = [failure] if failure else model.rows
    if "model" not in wanted:
        rows = [r for r in rows if r.failed]  # it runs for the others; shown only when it fails
    for name in (s for s in SECTIONS if s in wanted and s in later):
        if model is None or model.weights is None:
            rows.append(error_row(name, PpiseError("needs the weights the model section checks, which it did not "
                                                   "write (see its rows)")))
            continue
        got, failure = _attempt(name, lambda: later[name](ctx, model))
        rows += [failure] if failure else got
    return rows


def run_parity(opts: ParityOptions, keep_work_dir: bool = False) -> Tuple[List[Row], ParityContext]:
    """All requested sections; returns the rows (setup notes first) and the context."""
    check_options(opts)
    from ..utils.device import setup_device

    ctx = build_context(opts)
    setup_device(ctx.cfg["Global"])
    rows: List[Row] = list(ctx.notes)
    try:
        rows += _run_sections(ctx)
    finally:
        failed = any(r.failed for r in rows)
        if not opts.work_dir and not keep_work_dir and not failed:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)
        elif not opts.work_dir:
            logger.info(f"parity artifacts (logs, features, exported model) kept in {ctx.work_dir}")
    return rows, ctx
