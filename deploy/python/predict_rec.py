"""Features of images with Paddle Inference (L2-normalised), PaddleClas-style.

    python deploy/python/predict_rec.py -c deploy/configs/inference_rec.yaml -o Global.infer_imgs=PATH

PATH: an image, a folder or a list file. Writes Global.output_dir/features.npy and
image_list.txt (row i of the array is line i); prints a JSON summary on stdout.
"""
from __future__ import annotations

from typing import List, Optional

import _common


def main(argv: Optional[List[str]] = None) -> int:
    cfg = _common.load(_common.parser(__doc__.splitlines()[0]).parse_args(argv))
    from ppise.deploy.pipeline import dumps, predict_images

    print(dumps(predict_images(cfg)))
    return 0


if __name__ == "__main__":
    from ppise.utils.cli import run_tool

    run_tool(main)
