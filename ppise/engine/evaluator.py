"""Retrieval evaluation: query/gallery features -> metrics table, json and saved features."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Optional

import numpy as np

from ..config import get
from ..utils import dist
from ..utils.fileio import atomic_write
from ..utils.logger import logger
from .extract import extract_features

METRIC_ORDER = ("mAP", "rank1", "rank5", "rank10", "mINP")


def build_eval_loader(cfg: Dict[str, Any], split: str):
    """Loader for ``DataLoader.Eval.<split>`` (Query or Gallery), sharded over ranks."""
    from ..data import build_dataloader, build_dataset, build_sampler

    where = f"DataLoader.Eval.{split}"
    section = get(cfg, where)
    dataset = build_dataset(section, where)
    sampler = build_sampler(section.get("sampler") or {"name": "BatchSampler", "batch_size": 64},
                            dataset.labels, dataset.cameras, where=f"{where}.sampler",
                            rank=dist.rank(), world_size=dist.world_size())
    return build_dataloader(dataset, sampler, section.get("loader")), dataset


def save_features(out_dir: str, query: Dict[str, np.ndarray], gallery: Dict[str, np.ndarray], qset, gset) -> None:
    """Write the exact arrays the metrics used, for parity checks and offline analysis."""
    os.makedirs(out_dir, exist_ok=True)
    for name, part, ds in (("query", query, qset), ("gallery", gallery, gset)):
        np.save(os.path.join(out_dir, f"{name}_feats.npy"), part["feats"].astype(np.float32))
        np.save(os.path.join(out_dir, f"{name}_ids.npy"), part["pids"])
        np.save(os.path.join(out_dir, f"{name}_cams.npy"), part["cams"])
        with open(os.path.join(out_dir, f"{name}_paths.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(ds.images[i] for i in part["idx"]) + "\n")


def format_table(metrics: Dict[str, Any]) -> str:
    keys = [k for k in METRIC_ORDER if k in metrics] + sorted(k for k in metrics if k.startswith("rank") and k not in METRIC_ORDER)
    head = " | ".join(f"{k:>7}" for k in keys)
    vals = " | ".join(f"{100 * metrics[k]:7.2f}" for k in keys)
    return f"protocol {metrics.get('protocol')}: {metrics.get('num_query')} queries, {metrics.get('num_gallery')} gallery\n{head}\n{vals}"


def evaluate_model(model, cfg: Dict[str, Any], loaders: Optional[Dict[str, Any]] = None, save_dir: Optional[str] = None,
                   amp=None) -> Dict[str, Any]:
    """Extract query and gallery features with ``model`` (``amp``: AmpSettings of the extraction)
    and compute retrieval metrics."""
    from ..metric import evaluate, topk_from_config

    glob = cfg["Global"]
    if loaders is None:
        loaders = {split: build_eval_loader(cfg, split) for split in ("Query", "Gallery")}
    normalize = bool(glob.get("feature_normalize", True))
    key = get(cfg, "Arch.infer_output_key", "features")
    (qloader, qset), (gloader, gset) = loaders["Query"], loaders["Gallery"]
    query = extract_features(model, qloader, normalize=normalize, desc="query", output_key=key, amp=amp)
    gallery = extract_features(model, gloader, normalize=normalize, desc="gallery", output_key=key, amp=amp)
    metrics = evaluate(query["feats"], gallery["feats"], query["pids"], gallery["pids"],
                       query["cams"], gallery["cams"], protocol=glob["eval_protocol"],
                       block_size=int(glob.get("sim_block_size", 64)),
                       topk=topk_from_config(get(cfg, "Metric.Eval", None)))
    if save_dir and dist.is_main():
        save_features(save_dir, query, gallery, qset, gset)
        logger.info(f"saved query/gallery features to {save_dir}")
    return metrics


def write_metrics(metrics: Dict[str, Any], out_dir: str, name: str = "eval_metrics.json") -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    with atomic_write(path, encoding="utf-8") as f:
        json.dump(clean, f, indent=2)
    return path
