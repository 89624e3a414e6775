"""Draw ranked retrieval results: each query beside its top-k gallery images (cv2).

One row per query: the query (blue frame) on the left, a gap, then the hits in rank order,
framed green for the query's identity, red for another identity, grey when either id is
unknown. Above each image: ``#rank score``; below it: ``id N cM``.

Layout (``canvas_shape`` computes it): every image is resized to ``thumb`` = (h, w) and
framed by ``BORDER`` px; a cell is ``w + 2*BORDER`` wide and ``CAPTION + h + 2*BORDER +
CAPTION`` tall; a row is ``PAD`` + cell height + ``PAD`` tall and ``PAD + cell + GAP +
k cells with PAD between + PAD`` wide.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from ..errors import ConfigError
from .images import read_rgb

BORDER, CAPTION, PAD, GAP = 4, 16, 8, 24
GREEN, RED, GREY, BLUE = (40, 170, 40), (40, 40, 220), (150, 150, 150), (220, 130, 30)  # BGR
BACKGROUND = (255, 255, 255)
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.36


def canvas_shape(num_queries: int, k: int, thumb: Tuple[int, int] = (128, 64)) -> Tuple[int, int]:
    """(height, width) of the picture for ``num_queries`` rows of ``k`` hits."""
    h, w = thumb
    cell_w, cell_h = w + 2 * BORDER, 2 * CAPTION + h + 2 * BORDER
    width = PAD + cell_w + GAP + k * cell_w + max(k - 1, 0) * PAD + PAD
    return num_queries * (cell_h + 2 * PAD), width


def _put(canvas: np.ndarray, text: str, x: int, y: int, width: int) -> None:
    """Centre ``text`` over a cell ``width`` wide, baseline at ``y``."""
    (tw, _), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    cv2.putText(canvas, text, (x + max((width - tw) // 2, 0), y), FONT, FONT_SCALE, (20, 20, 20), 1, cv2.LINE_AA)


def _cell(canvas: np.ndarray, path: str, x: int, y: int, thumb: Tuple[int, int], colour, top: str,
          bottom: str) -> None:
    h, w = thumb
    img = cv2.resize(read_rgb(path), (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]  # RGB -> BGR
    cell_w = w + 2 * BORDER
    _put(canvas, top, x, y + CAPTION - 4, cell_w)
    fy = y + CAPTION
    cv2.rectangle(canvas, (x, fy), (x + cell_w - 1, fy + h + 2 * BORDER - 1), colour, thickness=-1)
    canvas[fy + BORDER:fy + BORDER + h, x + BORDER:x + BORDER + w] = img
    _put(canvas, bottom, x, fy + h + 2 * BORDER + CAPTION - 4, cell_w)


def _id_text(pid: int, cam: int) -> str:
    if pid < 0 and cam < 0:
        return "id ?"
    return f"id {pid}" + (f" c{cam + 1}" if cam >= 0 else "")  # cameras are 0-based, names say c1...


def draw_results(results: List[Dict[str, Any]], out_path: str, k: int,
                 thumb: Tuple[int, int] = (128, 64)) -> Tuple[int, int]:
    """Write a PNG of ``results`` (records from ``hits_as_records``); returns its (h, w)."""
    if not results:
        raise ConfigError("nothing to draw: no queries")
    height, width = canvas_shape(len(results), k, thumb)
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    cell_w = thumb[1] + 2 * BORDER
    row_h = height // len(results)
    for qi, rec in enumerate(results):
        y = qi * row_h + PAD
        _cell(canvas, rec["query"], PAD, y, thumb, BLUE, "query", _id_text(rec["pid"], rec["cam"]))
        x = PAD + cell_w + GAP
        for hit in rec["hits"][:k]:
            colour = GREY if "match" not in hit else (GREEN if hit["match"] else RED)
            _cell(canvas, hit["path"], x, y, thumb, colour, f"#{hit['rank']} {hit['score']:.3f}",
                  _id_text(hit["pid"], hit["cam"]))
            x += cell_w + PAD
        if qi:
            cv2.line(canvas, (0, qi * row_h), (width - 1, qi * row_h), (210, 210, 210), 1)
    if not cv2.imwrite(out_path, canvas):
        raise ConfigError(f"cannot write the picture {out_path} (--vis): check the folder exists and the "
                          f"name ends in .png or .jpg")
    return height, width
