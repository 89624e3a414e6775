"""Shared start-up of the deploy scripts: ppise on sys.path, ``-c``/``-o`` parsing, logging to stderr."""
from __future__ import annotations

import argparse
import logging
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_CONFIG = os.path.join(ROOT, "deploy", "configs", "inference_rec.yaml")


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="deploy YAML (default: deploy/configs/inference_rec.yaml)")
    p.add_argument("-o", "--override", action="append", default=[], help="override a key: -o Section.key=value (repeatable)")
    return p


def load(args: argparse.Namespace):
    """The deploy config; logs go to stderr so stdout stays machine-readable (JSON)."""
    from ppise.deploy.config import load_deploy_config
    from ppise.utils.logger import logger

    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
            handler.setStream(sys.stderr)
    cfg = load_deploy_config(args.config, args.override, warn=logger.warning)
    # The predictor sets its math-library threads itself (Global.cpu_num_threads); these bound
    # numpy's and faiss's BLAS. OMP_NUM_THREADS stays the user's: set above 1, paddle prints a
    # data-parallel warning at import on every run.
    threads = str(cfg["Global"]["cpu_num_threads"])
    for var in ("MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    return cfg
