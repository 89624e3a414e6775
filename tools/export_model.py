"""Export the inference branch to a static graph for Paddle Inference.

    python tools/export_model.py -c CONFIG -o Global.pretrained_model=PATH \
        -o Global.save_inference_dir=DIR [-o Global.export_format=pir|legacy]

Writes DIR/inference.json (pir, Paddle 3's default) or DIR/inference.pdmodel (legacy, for
PaddleClas's own deploy predictor), DIR/inference.pdiparams and DIR/inference.yml.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppise.utils.cli import config_parser, run_tool  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    args = config_parser("export a ppise model to a Paddle Inference static graph").parse_args(argv)
    from ppise.config import get_config
    from ppise.utils.device import prepare_env
    from ppise.utils.logger import logger

    cfg = get_config(args.config, args.override, warn=logger.warning)
    prepare_env(cfg["Global"])
    from ppise.deploy.export import export_model
    from ppise.utils.device import setup_device

    setup_device(cfg["Global"])
    export_model(cfg)
    return 0


if __name__ == "__main__":
    run_tool(main)
