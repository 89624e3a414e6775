"""Deploy parity: ppise's legacy export in PaddleClas's ``RecPredictor``, in ppise's
``deploy/python/predict_rec.py`` and in dygraph (features L2-normalised, as the predictors give).

``RecPredictor`` is fed the dygraph input arrays (``RecPreProcess.transform_ops: []``), so it
measures the graph and the engine only; ``predict_rec.py`` reads the image files, as a user
runs it. PaddleClas's deploy preprocessing ops get their own row on the same decoded pixels.

``RecPredictor`` runs in a child (``python -m ppise.parity.deploy CONFIG.yaml BATCH.npy OUT.npy``)
with ``FLAGS_enable_pir_api=0`` set before paddle loads: on Paddle 3.x its ``enable_memory_optim()``
fails on PIR models (Paddle issue #75496), while a legacy ``inference.pdmodel`` runs.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import yaml

from ..errors import PpiseError
from ..utils.arrays import l2_normalize
from .context import REPO_ROOT, ParityContext
from .model import ModelResult
from .report import NOTE, Row, array_row, describe_array

SECTION = "deploy"
CHILD_TIMEOUT = 1800


def run_child(ctx: ParityContext, cmd: List[str], what: str, log_name: str,
              env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a tool with the repo importable and the CPU threads capped; on failure raise with the
    last lines of its output (the full log is kept in the work dir)."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, str(ctx.args.cpu_threads))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT, cwd=REPO_ROOT)
    log_path = ctx.path(log_name)
    with open(log_path, "w", encoding="utf-8") as f:
        f.write(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise PpiseError(f"{what} exited with {proc.returncode}: {tail} (log: {log_path})")
    return proc


def run_recpredictor(ctx: ParityContext, model_dir: str) -> np.ndarray:
    """PaddleClas's ``RecPredictor``, configured as ``deploy/configs/inference_rec.yaml``."""
    args = ctx.args
    config = {
        "Global": {"rec_inference_model_dir": model_dir, "batch_size": int(ctx.batch.shape[0]),
                   "use_gpu": args.device == "gpu", "gpu_mem": 8000, "enable_mkldnn": bool(args.mkldnn),
                   "cpu_num_threads": int(args.cpu_threads), "enable_benchmark": False, "use_fp16": False,
                   "use_tensorrt": False, "ir_optim": True, "enable_profile": False},
        "RecPreProcess": {"transform_ops": []},
        "RecPostProcess": None,
    }
    paths = [ctx.path(n) for n in ("recpredictor.yaml", "batch.npy", "recpredictor_feats.npy")]
    with open(paths[0], "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    np.save(paths[1], ctx.batch)
    run_child(ctx, [sys.executable, "-m", "ppise.parity.deploy", *paths], "paddleclas RecPredictor "
              "(FLAGS_enable_pir_api=0)", "recpredictor.log", {"FLAGS_enable_pir_api": "0"})
    return np.load(paths[2])


def run_predict_rec(ctx: ParityContext, model_dir: str) -> np.ndarray:
    """ppise's ``deploy/python/predict_rec.py`` on the image files, as a user runs it."""
    list_path, out_dir = ctx.path("images.txt"), ctx.path("predict_rec")
    with open(list_path, "w", encoding="utf-8") as f:
        f.write("\n".join(os.path.abspath(p) for p in ctx.image_paths) + "\n")
    overrides = {"infer_imgs": list_path, "inference_model_dir": model_dir, "output_dir": out_dir,
                 "batch_size": len(ctx.image_paths), "enable_mkldnn": bool(ctx.args.mkldnn),
                 "cpu_num_threads": ctx.args.cpu_threads, "use_gpu": ctx.args.device == "gpu"}
    cmd = [sys.executable, os.path.join(REPO_ROOT, "deploy", "python", "predict_rec.py")]
    for key, value in overrides.items():
        cmd += ["-o", f"Global.{key}={value}"]
    summary = json.loads(run_child(ctx, cmd, "deploy/python/predict_rec.py", "predict_rec.log").stdout)
    with open(summary["image_list"], encoding="utf-8") as f:
        listed = [line.strip() for line in f if line.strip()]
    if [os.path.realpath(p) for p in listed] != [os.path.realpath(p) for p in ctx.image_paths]:
        raise PpiseError(f"predict_rec.py listed {listed} instead of {ctx.image_paths}")
    return np.load(summary["features"])


def paddleclas_preprocess(ctx: ParityContext) -> np.ndarray:
    """The evaluation transforms as PaddleClas's deploy preprocessing ops, on the decoded pixels."""
    from paddleclas.deploy.python.preprocess import create_operators

    ops_cfg = copy.deepcopy(ctx.cfg["DataLoader"]["Eval"]["Query"]["dataset"]["transform_ops"])
    if not any("ToCHWImage" in op for op in ops_cfg):
        ops_cfg.append({"ToCHWImage": None})
    ops = create_operators(ops_cfg)
    out = []
    for img in ctx.decoded:  # PaddleClas's ops take one image at a time
        for op in ops:
            img = op(img)
        out.append(np.asarray(img, np.float32))
    return np.stack(out)


def run_deploy_section(ctx: ParityContext, model: ModelResult) -> List[Row]:
    from ..deploy.export import export_model

    n = len(ctx.image_paths)
    try:
        pc_arrays = paddleclas_preprocess(ctx)
        rows = [array_row(SECTION, f"preprocess ({n} images)", pc_arrays, ctx.batch,
                          "deploy ops " + describe_array(pc_arrays), "eval transforms " + describe_array(ctx.batch),
                          "PaddleClas deploy/python/preprocess.py ops built from the config's evaluation "
                          "transform_ops (+ ToCHWImage) vs ppise's transforms, same decoded pixels")]
    except Exception as err:  # noqa: BLE001 - an op PaddleClas deploy lacks: say so, keep going
        rows = [Row(SECTION, "preprocess", "n/a", "", status=NOTE, detail="PaddleClas's deploy ops cannot run "
                    f"this config's transforms ({type(err).__name__}: {err})")]
    cfg, model_dir = copy.deepcopy(ctx.cfg), ctx.path("inference_legacy")  # tools/export_model.py, format legacy
    cfg["Global"].update(pretrained_model=model.weights, save_inference_dir=model_dir, export_format="legacy")
    export_model(cfg)
    rows.append(Row(SECTION, "export (legacy inference.pdmodel)", "", os.path.basename(model_dir), status=NOTE,
                    detail=f"ppise export_model, Global.export_format=legacy -> {model_dir}; RecPredictor runs it in a "
                           "child process with FLAGS_enable_pir_api=0 (its enable_memory_optim() fails on PIR models "
                           "on Paddle 3.x, issue #75496); RecPredictor is fed the dygraph input arrays, predict_rec.py "
                           "the image files"))
    rec = l2_normalize(run_recpredictor(ctx, model_dir))
    ppr = l2_normalize(run_predict_rec(ctx, model_dir))
    dy_pp, dy_pc = l2_normalize(model.dygraph["ppise"]), l2_normalize(model.dygraph["paddleclas"])
    # (check, paddleclas column, ppise column, a, b)
    pairs = [
        ("RecPredictor vs ppise dygraph", "RecPredictor(ppise export)", "dygraph", rec, dy_pp),
        ("predict_rec.py vs ppise dygraph", "", "predict_rec.py vs dygraph", ppr, dy_pp),
        ("RecPredictor vs predict_rec.py", "RecPredictor(ppise export)", "predict_rec.py", rec, ppr),
        ("paddleclas dygraph vs RecPredictor", "dygraph vs RecPredictor", "(ppise export)", dy_pc, rec),
    ]
    for item, pc_text, pp_text, a, b in pairs:
        rows.append(array_row(SECTION, f"{item} ({a.shape[0]} images, L2-normed)", a, b, pc_text, pp_text))
    return rows


def recpredictor_main(config_path: str, batch_path: str, out_path: str) -> None:
    """The child: ``RecPredictor`` built from PaddleClas's own deploy config parser, as its
    ``deploy/python/predict_rec.py`` does, on the preprocessed batch."""
    from paddleclas.deploy.python.predict_rec import RecPredictor
    from paddleclas.deploy.utils.config import parse_config

    predictor = RecPredictor(parse_config(config_path))
    # RecPreProcess.transform_ops is empty: predict() stacks the given CHW arrays as they are.
    feats = predictor.predict(list(np.load(batch_path)))
    np.save(out_path, np.asarray(feats, dtype=np.float32))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m ppise.parity.deploy CONFIG.yaml BATCH.npy OUT.npy")
    recpredictor_main(*sys.argv[1:])
