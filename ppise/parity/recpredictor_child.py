"""Run PaddleClas's own ``RecPredictor`` on a preprocessed batch, in its own process.

    FLAGS_enable_pir_api=0 python -m ppise.parity.recpredictor_child CONFIG.yaml BATCH.npy OUT.npy

The flag must be set before paddle is imported: on Paddle 3.x ``RecPredictor`` calls
``enable_memory_optim()``, which fails on PIR models (Paddle issue #75496), while a legacy
``inference.pdmodel`` runs. The config goes through PaddleClas's own deploy config parser,
so the predictor is built exactly as ``paddleclas/deploy/python/predict_rec.py`` does.
"""
from __future__ import annotations

import sys

import numpy as np


def main(argv) -> int:
    if len(argv) != 3:
        print("usage: python -m ppise.parity.recpredictor_child CONFIG.yaml BATCH.npy OUT.npy", file=sys.stderr)
        return 2
    config_path, batch_path, out_path = argv
    from paddleclas.deploy.python.predict_rec import RecPredictor
    from paddleclas.deploy.utils.config import parse_config

    predictor = RecPredictor(parse_config(config_path))
    # RecPreProcess.transform_ops is empty: predict() stacks the given CHW arrays as they are.
    feats = predictor.predict(list(np.load(batch_path)))
    np.save(out_path, np.asarray(feats, dtype=np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
