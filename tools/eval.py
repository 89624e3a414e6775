"""Evaluate retrieval: python tools/eval.py -c CONFIG -o Global.pretrained_model=PATH [-o Global.eval_protocol=paddleclas]"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppise.utils.cli import config_parser, run_tool  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    args = config_parser("ppise retrieval evaluation (market or paddleclas protocol)").parse_args(argv)
    from ppise.config import get_config
    from ppise.utils.device import prepare_env
    from ppise.utils.logger import logger

    cfg = get_config(args.config, args.override, warn=logger.warning)
    prepare_env(cfg["Global"])
    from ppise.data.demo_data import ensure_dataset
    from ppise.engine.amp import amp_settings, apply_to_static
    from ppise.engine.builder import build_model_from_config
    from ppise.engine.evaluator import evaluate_model, format_table, write_metrics
    from ppise.utils import dist
    from ppise.utils.device import setup_device

    glob = cfg["Global"]
    place = setup_device(glob)
    dist.init_distributed()
    ensure_dataset(cfg)
    from ppise.utils.seed import seed_everything

    seed_everything(int(glob.get("seed") or 0))  # a random-init evaluation is reproducible too
    model = build_model_from_config(cfg)
    if not glob.get("pretrained_model"):
        logger.warning("Global.pretrained_model is not set: evaluating a randomly initialised model")
    apply_to_static(model, glob, training=False)
    metrics = evaluate_model(model, cfg, save_dir=glob.get("save_features"), amp=amp_settings(cfg, device=place))
    if dist.is_main():
        path = write_metrics(metrics, glob["output_dir"])
        logger.info(f"{format_table(metrics)}\nwrote {path}")
    return 0


if __name__ == "__main__":
    run_tool(main)
