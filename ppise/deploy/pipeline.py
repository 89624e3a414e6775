"""The three flows of the scripts in ``deploy/python``: ``predict_images`` (features.npy +
image_list.txt), ``build_gallery`` (faiss index + id map), ``search_queries`` (ranked hits,
optional picture and metrics)."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from ..utils.logger import logger
from .gallery import build_index, load_gallery, save_gallery, set_search_params
from .images import ImageList, drop_unusable, list_images
from .predictor import RecPredictor
from .search import evaluate_queries, hits_as_records, search
from .visualize import draw_results


def _features(cfg: Dict[str, Any], images: ImageList, key: str,
              normalize: bool = True) -> Tuple[ImageList, np.ndarray, List[Dict[str, str]], float]:
    """``(usable images, their features, skipped images, seconds of extraction)``."""
    images, skipped = drop_unusable(images, key, cfg["Global"]["max_bad_image_ratio"])
    predictor = RecPredictor.from_config(cfg)
    start = time.time()
    feats = predictor.extract(images.paths, normalize=normalize)
    return images, feats, skipped, time.time() - start


def _with_skipped(out: Dict[str, Any], skipped: List[Dict[str, str]], out_dir: str) -> Dict:
    """Skipped images go into the summary and into ``out_dir/bad_images.txt``."""
    if skipped:
        out["skipped"] = skipped
        os.makedirs(out_dir, exist_ok=True)
        out["skipped_list"] = os.path.join(out_dir, "bad_images.txt")
        with open(out["skipped_list"], "w", encoding="utf-8") as f:
            f.writelines(f"{b['path']}\t{b['reason']}\n" for b in skipped)
    return out


def predict_images(cfg: Dict[str, Any]) -> Dict[str, Any]:
    images = list_images(cfg["Global"]["infer_imgs"], "Global.infer_imgs")
    images, feats, skipped, seconds = _features(cfg, images, "Global.infer_imgs",
                                                cfg["RecPostProcess"]["feature_normalize"])
    out_dir = cfg["Global"]["output_dir"]
    os.makedirs(out_dir, exist_ok=True)
    feat_path, list_path = os.path.join(out_dir, "features.npy"), os.path.join(out_dir, "image_list.txt")
    np.save(feat_path, feats)
    with open(list_path, "w", encoding="utf-8") as f:
        f.write("\n".join(images.paths) + "\n")
    logger.info(f"{len(images)} images -> features {list(feats.shape)} in {seconds:.2f}s: {feat_path}, {list_path}")
    out = {"features": feat_path, "image_list": list_path, "count": len(images), "dim": int(feats.shape[1]),
           "seconds": round(seconds, 3)}
    return _with_skipped(out, skipped, out_dir)


def build_gallery(cfg: Dict[str, Any]) -> Dict[str, Any]:
    idx_cfg = cfg["IndexProcess"]
    if idx_cfg["data_file"]:
        source, key = idx_cfg["data_file"], "IndexProcess.data_file"
    elif idx_cfg["image_root"]:
        source, key = idx_cfg["image_root"], "IndexProcess.image_root"
    else:
        raise ConfigError("set IndexProcess.image_root (a gallery folder) or IndexProcess.data_file "
                          "(a list file 'path pid [camid]')")
    images = list_images(source, key, idx_cfg["image_root"] if idx_cfg["data_file"] else None,
                         idx_cfg["delimiter"], idx_cfg["naming"])
    images, feats, skipped, seconds = _features(cfg, images, key)
    start = time.time() - seconds  # the build time counts the extraction
    params = {k: idx_cfg[k] for k in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search")}
    index = build_index(feats, idx_cfg["index_method"], **params)
    meta = {"index_method": idx_cfg["index_method"], "source": source,
            "model_dir": cfg["Global"]["inference_model_dir"], "normalized": True, "params": params}
    files = save_gallery(idx_cfg["index_dir"], index, images.paths, images.pids, images.cams, meta)
    logger.info(f"gallery: {len(images)} images, {idx_cfg['index_method']} index, dim {feats.shape[1]}, "
                f"{time.time() - start:.1f}s -> {idx_cfg['index_dir']}")
    out = {**files, "count": len(images), "dim": int(feats.shape[1]), "index_method": idx_cfg["index_method"]}
    return _with_skipped(out, skipped, idx_cfg["index_dir"])


def search_queries(cfg: Dict[str, Any], k: Optional[int] = None, vis: Optional[str] = None,
                   evaluate: bool = False, protocol: str = "market", vis_max: int = 50) -> Dict[str, Any]:
    """Rank the gallery for every query; ``vis`` draws PNGs (``vis_max`` queries each), ``evaluate`` adds metrics."""
    idx_cfg = cfg["IndexProcess"]
    k = int(k or idx_cfg["return_k"])
    if k < 1:
        raise ConfigError(f"--topk must be >= 1, got {k}")
    gallery = load_gallery(idx_cfg["index_dir"])
    set_search_params(gallery.index, idx_cfg["nprobe"], idx_cfg["ef_search"])
    naming = idx_cfg["naming"] if not evaluate else "market"
    queries = list_images(cfg["Global"]["infer_imgs"], "Global.infer_imgs", naming=naming,
                          strict=evaluate)
    queries, qfeats, skipped, _ = _features(cfg, queries, "Global.infer_imgs")
    if qfeats.shape[1] != gallery.index.d:
        raise ConfigError(f"the model {cfg['Global']['inference_model_dir']} gives {qfeats.shape[1]}-d features "
                          f"but the gallery {idx_cfg['index_dir']} holds {gallery.index.d}-d ones: rebuild it")
    start = time.time()
    scores, rows = search(gallery, qfeats, k)
    ms = 1000 * (time.time() - start) / max(len(queries), 1)
    results = hits_as_records(gallery, queries, scores, rows, idx_cfg["score_thres"])
    out: Dict[str, Any] = {"index_method": gallery.meta.get("index_method"), "gallery_size": len(gallery),
                           "search_ms_per_query": round(ms, 4), "results": results}
    _with_skipped(out, skipped, cfg["Global"]["output_dir"])
    if evaluate:
        out["metrics"] = evaluate_queries(gallery, qfeats, queries, protocol=protocol, ann_k=k)
    if vis:
        out["vis"] = draw_results(results, vis, k, max_rows=vis_max)
    return out


def dumps(obj: Dict[str, Any]) -> str:
    return json.dumps(obj, indent=2)
