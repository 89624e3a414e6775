"""ImageNet ResNet-50 weights -> .pdparams for ``Arch.Backbone.pretrained`` (ResNet50_last_stage_stride1).

    python tools/convert_weights.py resnet50-19c8e357.pth resnet50_tv.pdparams        # needs torch
    python tools/convert_weights.py model.safetensors resnet50_tv.pdparams             # no torch needed
    python tools/convert_weights.py ResNet50_pretrained.pdparams resnet50_pc.pdparams  # PaddleClas file

torchvision and PaddleClas layouts are recognised from the keys; every tensor is used and
shape-checked, the ImageNet fc layer is dropped. Then: -o Arch.Backbone.pretrained=resnet50_tv.pdparams
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from ppise.utils.cli import run_tool  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("src", help="torchvision .pth/.pt or .safetensors, or PaddleClas .pdparams")
    parser.add_argument("dst", help="output .pdparams")
    args = parser.parse_args(argv)
    from ppise.utils.weights import convert_resnet50_file

    info = convert_resnet50_file(args.src, args.dst)
    print(f"{info['src']} ({info['layout']} layout) -> {info['dst']}: {info['tensors']} tensors, fc dropped. "
          f"Use it with -o Arch.Backbone.pretrained={info['dst']}")
    return 0


if __name__ == "__main__":
    run_tool(main)
