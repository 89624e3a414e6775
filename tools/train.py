"""Train a re-ID model (unsupervised ISE / cluster contrast, or supervised): python tools/train.py -c configs/ise_market.yaml [-o K=V ...]"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppise.utils.cli import config_parser, run_tool  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    args = config_parser("ppise training (cluster contrast + ISE)").parse_args(argv)
    from ppise.config import check_components, dump, get_config
    from ppise.utils.device import prepare_env
    from ppise.utils.logger import logger

    cfg = get_config(args.config, args.override, warn=logger.warning)
    prepare_env(cfg["Global"])  # thread pools must be set before paddle starts
    from ppise.data.demo_data import ensure_dataset
    from ppise.engine.builder import build_trainer
    from ppise.engine.pretrain_cache import ensure_pretrained
    from ppise.utils import dist
    from ppise.utils.device import setup_device

    setup_device(cfg["Global"])
    check_components(cfg, warn=logger.warning, training=True)  # every key, type and the objective, before any data is read
    dist.init_distributed()
    logger.info(f"config {args.config} resolved:\n{dump(cfg)}")
    ensure_dataset(cfg)
    ensure_pretrained(cfg)  # Global.pretrained_from: a missing pre-trained start is made once (logged)
    trainer = build_trainer(cfg)
    trainer.train()
    return 0


if __name__ == "__main__":
    run_tool(main)
