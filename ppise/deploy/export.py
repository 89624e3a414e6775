"""Export the inference branch of a RecModel (no ISE head, no L2 normalisation) as a static
graph, checked against dygraph. ``legacy`` (``inference.pdmodel``) is what PaddleClas's predictor
needs on Paddle 3 (its ``enable_memory_optim()`` fails on PIR models, Paddle issue #75496); if
``OldIrGuard`` fails, or with ``PPISE_LEGACY_EXPORT=subprocess``, a child process started with
``FLAGS_enable_pir_api=0`` (read at paddle import) exports it.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any, Dict, List

import numpy as np
import paddle

from ..config import get, get_config, save
from ..errors import ConfigError, PpiseError
from ..utils.arrays import l2_normalize
from ..utils.device import setup_device
from ..utils.fileio import ensure_writable_dir
from ..utils.logger import logger
from ..utils.weights import resolve_weights_path
from .model_info import (INFO_FILE, MODEL_FILES, PARAMS_FILE, check_deploy_ops, default_transform_ops,
                         describe_preprocess, read_info, write_info)
from .predictor import RecPredictor

EXPORT_TOLERANCE = 1e-4  # max abs difference of L2-normalised features, dygraph vs Paddle Inference
INPUT_NAME = "x"
_EVAL_OPS_KEYS = ("DataLoader.Eval.Query.dataset.transform_ops", "DataLoader.Eval.Gallery.dataset.transform_ops")


def eval_transform_ops(cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The evaluation transforms (what features were validated with), else resize + normalise."""
    shape = cfg["Global"]["image_shape"]
    for key in _EVAL_OPS_KEYS:
        ops = get(cfg, key, None)
        if ops:
            check_deploy_ops(ops, shape, key)
            return [dict(op) for op in ops]
    logger.info("no DataLoader.Eval transform_ops in the config: inference.yml gets resize to "
                "Global.image_shape + ImageNet normalisation")
    return default_transform_ops(shape)


def _inference_net(model):
    class InferenceNet(paddle.nn.Layer):
        """The retrieval branch only: what ``tools/eval.py`` reads from the model."""

        def __init__(self, rec_model) -> None:
            super().__init__()
            self.model = rec_model

        def forward(self, x):
            return self.model.inference_output(self.model(x))

    return InferenceNet(model).eval()


def _pir_enabled() -> bool:
    return bool(paddle.get_flags(["FLAGS_enable_pir_api"])["FLAGS_enable_pir_api"])


def _save(net, spec, prefix: str, fmt: str) -> None:
    """``jit.save`` under the IR the format needs."""
    guard = paddle.pir_utils.IrGuard if fmt == "pir" else paddle.pir_utils.OldIrGuard
    with contextlib.nullcontext() if (fmt == "pir") == _pir_enabled() else guard():
        paddle.jit.save(paddle.jit.to_static(net, input_spec=spec, full_graph=True), prefix)


def _export_in_child(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Legacy export in a fresh process with ``FLAGS_enable_pir_api=0`` set before import."""
    out_dir = cfg["Global"]["save_inference_dir"]
    cfg_path = save(cfg, out_dir, f".export_{os.getpid()}.yaml")
    env = dict(os.environ, FLAGS_enable_pir_api="0", PPISE_LEGACY_EXPORT="inprocess")
    try:
        proc = subprocess.run([sys.executable, "-m", "ppise.deploy.export", cfg_path], env=env,
                              capture_output=True, text=True)
    finally:
        os.remove(cfg_path)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise PpiseError(f"legacy export in a child process (FLAGS_enable_pir_api=0) failed for "
                         f"{out_dir}: {tail}")
    logger.info(f"exported legacy model to {out_dir} in a child process (FLAGS_enable_pir_api=0)")
    return read_info(out_dir) or {}


def _verify(out_dir: str, fmt: str, probe: np.ndarray, expected: np.ndarray) -> float:
    """Load the saved model with Paddle Inference; its output must match dygraph."""
    predictor = RecPredictor(out_dir, enable_mkldnn=False, cpu_num_threads=1, batch_size=len(probe),
                             prefer_format=fmt, transform_ops=[])
    got = predictor.run(probe)
    if got.shape != expected.shape:
        raise PpiseError(f"exported model {out_dir} gives shape {got.shape}, dygraph {expected.shape}")
    # raw features can be ~1e4: compare directions, as retrieval does
    diff = float(np.max(np.abs(l2_normalize(got) - l2_normalize(expected))))
    if not diff <= EXPORT_TOLERANCE:
        raise PpiseError(f"exported model {out_dir} differs from the dygraph model by {diff:.2e} "
                         f"(> {EXPORT_TOLERANCE}): the export is broken")
    return diff


def export_model(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``Global.save_inference_dir``/inference.{json|pdmodel,pdiparams,yml}; return the info."""
    glob = cfg["Global"]
    fmt, out_dir = glob["export_format"], glob["save_inference_dir"]
    image_shape = list(glob["image_shape"])
    ops = eval_transform_ops(cfg)  # config mistakes surface before any model work
    if glob.get("pretrained_model"):
        resolve_weights_path(glob["pretrained_model"], "Global.pretrained_model")
    ensure_writable_dir(out_dir, "Global.save_inference_dir")
    if fmt == "legacy" and _pir_enabled() and os.environ.get("PPISE_LEGACY_EXPORT") == "subprocess":
        return _export_in_child(cfg)
    from ..engine.builder import build_model_from_config

    if not glob.get("pretrained_model"):
        logger.warning("Global.pretrained_model is not set: exporting a randomly initialised model")
    net = _inference_net(build_model_from_config(cfg))
    probe = np.random.RandomState(0).standard_normal([2] + image_shape).astype(np.float32)
    with paddle.no_grad():
        expected = net(paddle.to_tensor(probe)).numpy()
    output_key = get(cfg, "Arch.infer_output_key", "features")
    if expected.ndim != 2:
        raise ConfigError(f"Arch.infer_output_key {output_key!r} gives shape "
                          f"{list(expected.shape)}; retrieval needs [N, D] features (add a pooling neck or a "
                          f"BackboneStopLayer such as avg_pool / flatten)")

    for name in list(MODEL_FILES.values()) + [PARAMS_FILE, PARAMS_FILE + ".info", INFO_FILE]:
        stale = os.path.join(out_dir, name)  # never leave a model of the other format beside this one
        if os.path.isfile(stale):
            os.remove(stale)
    spec = [paddle.static.InputSpec([None] + image_shape, "float32", INPUT_NAME)]
    prefix = os.path.join(out_dir, "inference")
    try:
        _save(net, spec, prefix, fmt)
    except Exception as err:  # noqa: BLE001 - the guard may fail on other paddle builds
        if fmt != "legacy" or not _pir_enabled():
            raise
        logger.warning(f"legacy export under OldIrGuard failed ({type(err).__name__}: {err}); "
                       "retrying in a child process with FLAGS_enable_pir_api=0")
        return _export_in_child(cfg)
    model_file = os.path.join(out_dir, MODEL_FILES[fmt])
    if not os.path.isfile(model_file):
        raise PpiseError(f"paddle.jit.save wrote no {model_file} (format {fmt}); files: {sorted(os.listdir(out_dir))}")

    diff = _verify(out_dir, fmt, probe, expected)
    info = {
        "Model": {
            "format": fmt, "model_file": MODEL_FILES[fmt], "params_file": PARAMS_FILE,
            "input_name": INPUT_NAME, "input_shape": [None] + image_shape,
            "image_shape": image_shape, "output_key": output_key,
            "feature_dim": int(expected.shape[1]), "normalized_in_graph": False,
            "backbone": get(cfg, "Arch.Backbone.name", None),
            "neck": get(cfg, "Arch.Neck.name", None),
            "pretrained_model": glob.get("pretrained_model"), "paddle_version": paddle.__version__,
            "export_check_max_abs_diff": diff,
        },
        "PreProcess": {**describe_preprocess(ops), "transform_ops": ops},
        "PostProcess": {"l2_normalize": True, "similarity": "inner product of L2-normalised features (cosine)"},
    }
    write_info(out_dir, info)
    logger.info(f"exported {fmt} model to {out_dir} ({MODEL_FILES[fmt]}, {PARAMS_FILE}, {INFO_FILE}); "
                f"feature dim {info['Model']['feature_dim']}, Paddle Inference vs dygraph max |diff| {diff:.1e}")
    return info


def _child_main(cfg_path: str) -> int:
    """Entry of the ``FLAGS_enable_pir_api=0`` child process."""
    cfg = get_config(cfg_path)
    setup_device(cfg["Global"])
    export_model(cfg)
    return 0


if __name__ == "__main__":
    from ..utils.cli import run_tool

    run_tool(lambda _argv: _child_main(sys.argv[1]))
