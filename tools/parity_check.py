"""Check ppise against PaddleClas on one config; prints a PASS/FAIL table, exits 1 on any FAIL.

    python tools/parity_check.py -c ../shared/paddleclas/ResNet50_UReID_infer.yaml \
        [--weights ISE_M_model.pdparams] [--data /path/to/image_root] [--image-shape 3 64 32]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppise.parity.cli import main  # noqa: E402
from ppise.utils.cli import run_tool  # noqa: E402

if __name__ == "__main__":
    run_tool(main)
