"""Dygraph inference: features, or gallery top-k, for an image, a folder or a list file (no export).

    python tools/infer.py -c configs/ise_market.yaml -o Global.pretrained_model=output/ise_market/RecModel/best_model \\
        -o Infer.infer_imgs=dataset/query/0001_c1s1_001051_00.jpg \\
        -o "Infer.PostProcess={name: Topk, topk: 5, gallery: dataset/bounding_box_test}"

Prints one JSON line per image ({"file", "feature"} or {"file", "topk": [{"file", "score", "pid"}]});
the ``Infer`` section is PaddleClas's (see ppise/engine/infer.py).
"""
from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppise.utils.cli import config_parser, run_tool  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    args = config_parser("ppise dygraph inference (PaddleClas Infer section)").parse_args(argv)
    from ppise.config import get_config
    from ppise.utils.device import prepare_env
    from ppise.utils.logger import logger

    cfg = get_config(args.config, args.override, warn=logger.warning)
    prepare_env(cfg["Global"])
    from ppise.engine.amp import amp_settings, apply_to_static
    from ppise.engine.builder import build_model_from_config
    from ppise.engine.infer import infer_settings, run_infer
    from ppise.utils.device import setup_device

    infer_settings(cfg)  # a config mistake fails before the model is built
    setup_device(cfg["Global"])
    model = build_model_from_config(cfg)
    if not cfg["Global"].get("pretrained_model"):
        logger.warning("Global.pretrained_model is not set: features of a randomly initialised model")
    apply_to_static(model, cfg["Global"], training=False)
    for result in run_infer(model, cfg, amp=amp_settings(cfg)):
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    run_tool(main)
