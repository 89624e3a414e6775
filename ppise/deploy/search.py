"""Query features against a gallery: ranked hits, and retrieval metrics through the deploy path."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import DataError
from ..metric import evaluate
from .gallery import Gallery, all_vectors, is_exact
from .images import UNKNOWN, ImageList


def search(gallery: Gallery, qfeats: np.ndarray, k: int):
    """``(scores, rows)`` of shape [Q, min(k, gallery size)], best first; row -1 = no hit."""
    qfeats = np.ascontiguousarray(qfeats, dtype=np.float32)
    return gallery.index.search(qfeats, min(int(k), len(gallery)))


def hits_as_records(gallery: Gallery, queries: ImageList, scores: np.ndarray, rows: np.ndarray,
                    score_thres: Optional[float] = None) -> List[Dict[str, Any]]:
    """JSON-ready results: one record per query with its ranked hits."""
    out = []
    qpids, qcams = queries.pids, queries.cams
    for qi, path in enumerate(queries.paths):
        keep = rows[qi] >= 0
        if score_thres is not None:
            keep &= scores[qi] >= score_thres
        hits = []
        for rank, (row, score) in enumerate(zip(rows[qi][keep], scores[qi][keep]), start=1):
            hit = {"rank": rank, "score": round(float(score), 6), "path": gallery.paths[row],
                   "pid": int(gallery.pids[row]), "cam": int(gallery.cams[row])}
            if qpids[qi] != UNKNOWN and gallery.pids[row] != UNKNOWN:
                hit["match"] = bool(gallery.pids[row] == qpids[qi])
            hits.append(hit)
        out.append({"query": path, "pid": int(qpids[qi]), "cam": int(qcams[qi]), "hits": hits})
    return out


def evaluate_queries(gallery: Gallery, qfeats: np.ndarray, queries: ImageList,
                     protocol: str = "market", topk: Sequence[int] = (1, 5, 10),
                     ann_k: int = 10) -> Dict[str, Any]:
    """mAP / CMC / mINP by ``ppise.metric.evaluate`` on the gallery's stored vectors (exact
    similarities whatever the index, so they equal ``tools/eval.py``'s); for an approximate
    index also ``ann_recall@k``, the share of the exact top-k it returns."""
    if np.any(gallery.pids == UNKNOWN) and protocol == "market":
        missing = int(np.count_nonzero(gallery.pids == UNKNOWN))
        raise DataError(f"{missing} gallery images have no person id: --eval needs a gallery built with "
                        "Market naming or a label file (IndexProcess.naming / IndexProcess.data_file)")
    if np.any(queries.pids == UNKNOWN):
        raise DataError("--eval needs query person ids and cameras: use a query folder in Market naming "
                        "or a list file 'path pid camid'")
    gfeats = all_vectors(gallery.index)
    metrics = evaluate(qfeats, gfeats, queries.pids, gallery.pids, queries.cams, gallery.cams,
                       protocol=protocol, topk=topk)
    metrics["index_method"] = gallery.meta.get("index_method", "Flat")
    if not is_exact(gallery.index):
        k = min(int(ann_k), len(gallery))
        exact = np.concatenate([np.argsort(-(qfeats[s:s + 256] @ gfeats.T), axis=1)[:, :k]
                                for s in range(0, len(qfeats), 256)])  # [256, G] similarities at a time
        _, approx = search(gallery, qfeats, k)
        found = (exact[:, :, None] == approx[:, None, :]).any(axis=2)
        metrics[f"ann_recall@{k}"] = float(found.mean())
    return metrics
