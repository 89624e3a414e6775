"""Index a gallery: features of every image -> faiss index + id map in IndexProcess.index_dir.

    python deploy/python/build_gallery.py -c deploy/configs/inference_rec.yaml \
        -o IndexProcess.image_root=GALLERY_DIR -o IndexProcess.index_dir=OUT_DIR \
        [-o IndexProcess.index_method=Flat|IVF|HNSW]

Ids and cameras come from Market-1501 file names, or from IndexProcess.data_file
(one 'path pid [camid]' per line, relative to IndexProcess.image_root).
"""
from __future__ import annotations

from typing import List, Optional

import _common


def main(argv: Optional[List[str]] = None) -> int:
    cfg = _common.load(_common.parser(__doc__.splitlines()[0]).parse_args(argv))
    from ppise.deploy.pipeline import build_gallery, dumps

    print(dumps(build_gallery(cfg)))
    return 0


if __name__ == "__main__":
    from ppise.utils.cli import run_tool

    run_tool(main)
