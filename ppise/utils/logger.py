"""One logger for the package: rank-aware, to stdout and ``{output_dir}/train.log``."""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from .dist import rank

_LOGGER_NAME = "ppise"


def get_logger(log_file: Optional[str] = None) -> logging.Logger:
    """Return the package logger; only rank 0 prints INFO (other ranks print warnings)."""
    logger = logging.getLogger(_LOGGER_NAME)
    if not getattr(logger, "_ppise_ready", False):
        logger.setLevel(logging.INFO if rank() == 0 else logging.WARNING)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[%(asctime)s] ppise %(levelname)s: %(message)s", "%Y/%m/%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
        logger._ppise_ready = True  # type: ignore[attr-defined]
    opened = {getattr(h, "baseFilename", None) for h in logger.handlers}
    if log_file and rank() == 0 and os.path.abspath(log_file) not in opened:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s: %(message)s", "%Y/%m/%d %H:%M:%S"))
        logger.addHandler(fh)
    return logger


logger = get_logger()


def log_to_file(level: int, message: str) -> None:
    """Write ``message`` to the log files only (``train.log``), not the console: for what ends a
    run, which the tool already prints to stderr."""
    log = logging.getLogger(_LOGGER_NAME)
    record = log.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
