"""Dygraph inference with PaddleClas's ``Infer`` section: features (and gallery top-k) without exporting.

    Infer:
      infer_imgs: ./dataset/query          # an image, a folder (sorted, non-recursive) or a list file
      batch_size: 32
      transforms:                          # PaddleClas ops; default: DataLoader.Eval.Query's transform_ops
        - DecodeImage: {to_rgb: True, channel_first: False}   # accepted: ppise decodes with PIL as its datasets do
        - ResizeImage: {size: [128, 256], interpolation: bicubic, backend: pil}
        - NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}
      PostProcess: null                    # or {name: Topk, topk: 5, gallery: ./dataset/bounding_box_test}
      save_features: null                  # a .npz path: paths + features

Each image gives its feature, or with a gallery (``PostProcess`` or ``Infer.gallery``) its
``topk`` gallery images by cosine. Decoding and default transforms equal the evaluation
datasets', so a query's features here equal ``tools/eval.py``'s for the same weights.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np

from ..config import check_plain_section, get
from ..errors import ConfigError
from ..utils.fileio import atomic_write
from ..utils.logger import logger
from .extract import extract_features

POSTPROCESS_NAMES = ("Topk",)


class ImageBatches:
    """A loader over an ``ImageList``: ``(images, pids, cams, idx)`` batches as ``extract_features``
    reads them, preprocessed as deploy does (so as the evaluation datasets do)."""

    def __init__(self, images, preprocess, batch_size: int) -> None:
        self.images, self.preprocess, self.batch_size = images, preprocess, batch_size

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        import paddle

        for start in range(0, len(self.images), self.batch_size):
            stop = min(start + self.batch_size, len(self.images))
            yield (paddle.to_tensor(self.preprocess(self.images.paths[start:stop])),
                   self.images.pids[start:stop], self.images.cams[start:stop], np.arange(start, stop))


def infer_settings(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The checked ``Infer`` section with defaults filled (a copy)."""
    section = check_plain_section(dict(cfg.get("Infer") or {}), "Infer")  # config.INFER_SCHEMA
    section["infer_imgs"] = section["infer_imgs"] or cfg["Global"].get("infer_imgs")
    if not section["infer_imgs"]:
        raise ConfigError("Infer.infer_imgs is not set: give an image, a folder or a list file "
                          "(-o Infer.infer_imgs=PATH)")
    post = section["PostProcess"] or {}
    if post and post.get("name") not in POSTPROCESS_NAMES:
        raise ConfigError(f"Infer.PostProcess.name must be one of {', '.join(POSTPROCESS_NAMES)} "
                          f"(re-ID retrieval), got {post.get('name')!r}")
    section["gallery"] = post.get("gallery", section["gallery"])
    section["topk"] = post.get("topk", section["topk"])
    if not isinstance(section["topk"], int) or isinstance(section["topk"], bool) or section["topk"] < 1:
        raise ConfigError(f"Infer top-k must be a positive int, got {section['topk']!r}")
    if section["transforms"] is None:
        section["transforms"] = get(cfg, "DataLoader.Eval.Query.dataset.transform_ops", None)
        if section["transforms"] is None:
            raise ConfigError("Infer.transforms is not set and DataLoader.Eval.Query.dataset.transform_ops is absent")
    return section


def build_infer_transform(ops: Optional[List[Dict[str, Any]]], where: str = "Infer.transforms"):
    """``paths -> [N, C, H, W]``: PaddleClas ops minus ``DecodeImage`` (images are decoded by PIL
    to RGB, as ppise's datasets do)."""
    from ..deploy.preprocess import Preprocessor

    kept = []
    for i, op in enumerate(ops or []):
        if isinstance(op, dict) and len(op) == 1 and "DecodeImage" in op:
            params = op["DecodeImage"] or {}
            if params.get("to_rgb", True) is False:
                raise ConfigError(f"{where}[{i}].DecodeImage.to_rgb=False: ppise models are trained on RGB images")
            continue
        kept.append(op)
    return Preprocessor(kept, where)


def top_k(query: np.ndarray, gallery: np.ndarray, k: int):
    """Indices and cosine scores of each query's ``k`` nearest gallery rows (L2-normalises both)."""
    from ..utils.arrays import l2_normalize

    sims = l2_normalize(query) @ l2_normalize(gallery).T
    k = min(k, gallery.shape[0])
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


def run_infer(model, cfg: Dict[str, Any], amp=None) -> List[Dict[str, Any]]:
    """Features (or gallery top-k) for ``Infer.infer_imgs``; one result dict per image."""
    from ..deploy.images import list_images

    settings = infer_settings(cfg)
    transform = build_infer_transform(settings["transforms"])
    normalize = bool(cfg["Global"].get("feature_normalize", True))

    def features(images) -> np.ndarray:  # float32, in the order of the ImageList
        loader = ImageBatches(images, transform, settings["batch_size"])
        return extract_features(model, loader, normalize=normalize, desc="infer", amp=amp)["feats"]

    queries = list_images(settings["infer_imgs"], "Infer.infer_imgs")
    feats = features(queries)
    logger.info(f"infer: {len(queries)} image(s) -> {feats.shape[1]}-d features")
    if settings["gallery"]:
        gallery = list_images(settings["gallery"], "Infer.PostProcess.gallery")
        idx, scores = top_k(feats, features(gallery), settings["topk"])
        results = [{"file": path, "topk": [
            {"file": gallery.paths[g], "score": round(float(s), 6), "pid": int(gallery.pids[g])}
            for g, s in zip(idx[q], scores[q])]} for q, path in enumerate(queries.paths)]
    else:
        results = [{"file": path, "feature": [round(float(v), 6) for v in feat]}
                   for path, feat in zip(queries.paths, feats)]
    if settings.get("save_features"):
        path = settings["save_features"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path, "wb") as f:
            np.savez(f, paths=np.asarray(queries.paths), feats=feats)
        logger.info(f"infer: features saved to {path}")
    return results
