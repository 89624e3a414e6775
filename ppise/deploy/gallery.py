"""A gallery on disk: ``vector.index`` (faiss; inner products of L2-normalised features, i.e.
cosine) and ``id_map.json`` (row -> path, person id, camera; index method, feature dim).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import faiss
import numpy as np

from ..errors import ConfigError, DataError
from ..utils.fileio import atomic_path, atomic_write
from ..utils.logger import logger

INDEX_FILE = "vector.index"
ID_MAP_FILE = "id_map.json"
METHODS = ("Flat", "IVF", "HNSW")


def build_index(feats: np.ndarray, method: str = "Flat", nlist: int = 100, nprobe: int = 10, hnsw_m: int = 32,
                ef_construction: int = 40, ef_search: int = 64):
    """A faiss inner-product index holding ``feats`` ([N, D] float32, normalised)."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    n, dim = feats.shape
    if method == "Flat":
        index = faiss.IndexFlatIP(dim)
    elif method == "IVF":
        cells = min(int(nlist), n)
        if cells < nlist:
            logger.warning(f"IndexProcess.nlist={nlist} > gallery size {n}: using {cells} cells")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
        index.train(feats)
    elif method == "HNSW":
        index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
    else:
        raise ConfigError(f"IndexProcess.index_method must be one of {', '.join(METHODS)}, got {method!r}")
    set_search_params(index, nprobe, ef_search)
    index.add(feats)
    return index


def set_search_params(index, nprobe: Optional[int] = None, ef_search: Optional[int] = None) -> None:
    """Search-time knobs (recall versus speed); no-ops for an exact index."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe:
        ivf.nprobe = min(int(nprobe), ivf.nlist)
    if hasattr(index, "hnsw") and ef_search:
        index.hnsw.efSearch = int(ef_search)


def is_exact(index) -> bool:
    return isinstance(index, faiss.IndexFlat)


def all_vectors(index) -> np.ndarray:
    """Every stored vector, in row order (IVF needs its direct map for this)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    return index.reconstruct_n(0, index.ntotal)


@dataclass
class Gallery:
    index: Any
    paths: List[str]
    pids: np.ndarray
    cams: np.ndarray
    meta: Dict[str, Any]

    def __len__(self) -> int:
        return len(self.paths)


def save_gallery(index_dir: str, index, paths: List[str], pids: np.ndarray, cams: np.ndarray,
                 meta: Dict[str, Any]) -> Dict[str, str]:
    """Write both files atomically (tmp + rename), index first: the id map marks completion."""
    if index.ntotal != len(paths):
        raise ValueError(f"index holds {index.ntotal} vectors but {len(paths)} paths were given")
    try:
        os.makedirs(index_dir, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"IndexProcess.index_dir {index_dir!r} cannot be created: {err}") from err
    index_path, map_path = os.path.join(index_dir, INDEX_FILE), os.path.join(index_dir, ID_MAP_FILE)
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, tmp)
    record = {**meta, "count": len(paths), "dim": int(index.d), "paths": list(paths),
              "pids": [int(p) for p in pids], "cams": [int(c) for c in cams]}
    with atomic_write(map_path, encoding="utf-8") as f:
        json.dump(record, f)
    return {"index": index_path, "id_map": map_path}


def load_gallery(index_dir: str, key: str = "IndexProcess.index_dir") -> Gallery:
    index_path, map_path = os.path.join(index_dir, INDEX_FILE), os.path.join(index_dir, ID_MAP_FILE)
    for path in (index_path, map_path):
        if not os.path.isfile(path):
            raise ConfigError(f"gallery file not found: {path} (from {key}); build it with "
                              f"deploy/python/build_gallery.py")
    rebuild = (f"rebuild it with deploy/python/build_gallery.py -o IndexProcess.index_dir={index_dir} "
               f"-o IndexProcess.image_root=GALLERY_DIR")
    if os.path.getsize(index_path) == 0:
        raise DataError(f"gallery index {index_path} (from {key}) is empty (0 bytes): its build was interrupted or "
                        f"the disk was full; {rebuild}")
    try:
        index = faiss.read_index(index_path)
    except (RuntimeError, OSError) as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise DataError(f"gallery index {index_path} (from {key}) is not a readable faiss index ({first}); "
                        f"{rebuild}") from None
    try:
        with open(map_path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the gallery id map {map_path} (from {key}): {err}; {rebuild}") from None
    paths, pids, cams = (record.pop(name) for name in ("paths", "pids", "cams"))
    if index.ntotal != len(paths) or index.ntotal == 0:
        raise DataError(f"gallery {index_dir} is inconsistent or empty: {index.ntotal} vectors, {len(paths)} paths")
    return Gallery(index, paths, np.asarray(pids, np.int64), np.asarray(cams, np.int64), record)
