"""Draw ranked retrieval results: per query, its file name, the query (blue frame) and its hits,
green for its identity seen by another camera, orange by its own camera (the market protocol
excludes those from mAP / CMC), red for another identity, grey when either id is unknown.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from ..errors import ConfigError
from .images import read_rgb

BORDER, CAPTION, PAD, GAP, LEGEND = 4, 16, 8, 24, 2 * 16 + 8
GREEN, ORANGE, RED, GREY, BLUE = (40, 170, 40), (0, 150, 245), (40, 40, 220), (150, 150, 150), (220, 130, 30)  # BGR
BACKGROUND = (255, 255, 255)
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.36
DEFAULT_MAX_ROWS = 50
KEYS = ((BLUE, "query"), (GREEN, "same id, other camera"), (ORANGE, "same id, same camera (market protocol skips)"),
        (RED, "other id"), (GREY, "id unknown"))
LEGEND_WIDTH = 2 * PAD + 3 * 200  # three keys a line


def canvas_shape(num_queries: int, k: int, thumb: Tuple[int, int] = (128, 64)) -> Tuple[int, int]:
    """(height, width) of ``num_queries`` rows of ``k`` hits: cells of ``thumb`` framed by
    ``BORDER`` with a ``CAPTION`` above and below, ``PAD`` around, ``GAP`` after the query."""
    h, w = thumb
    cell_w, cell_h = w + 2 * BORDER, 2 * CAPTION + h + 2 * BORDER
    width = PAD + cell_w + GAP + k * cell_w + max(k - 1, 0) * PAD + PAD
    return LEGEND + num_queries * (CAPTION + cell_h + 2 * PAD), max(width, LEGEND_WIDTH)


def _put(canvas: np.ndarray, text: str, x: int, y: int, width: int, centre: bool = True) -> None:
    """``text`` (centred over a cell ``width`` wide, or left-aligned and clipped), baseline at ``y``."""
    (tw, _), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    while not centre and tw > width and len(text) > 4:
        text = "..." + text[4:]
        (tw, _), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    cv2.putText(canvas, text, (x + (max((width - tw) // 2, 0) if centre else 0), y), FONT, FONT_SCALE, (20, 20, 20),
                1, cv2.LINE_AA)


def _cell(canvas: np.ndarray, path: str, x: int, y: int, thumb: Tuple[int, int], colour, top: str,
          bottom: str) -> None:
    h, w = thumb
    img = cv2.resize(read_rgb(path), (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]  # RGB -> BGR
    cell_w, fy = w + 2 * BORDER, y + CAPTION
    _put(canvas, top, x, fy - 4, cell_w)
    cv2.rectangle(canvas, (x, fy), (x + cell_w - 1, fy + h + 2 * BORDER - 1), colour, thickness=-1)
    canvas[fy + BORDER:fy + BORDER + h, x + BORDER:x + BORDER + w] = img
    _put(canvas, bottom, x, fy + h + 2 * BORDER + CAPTION - 4, cell_w)


def _id_text(pid: int, cam: int) -> str:
    if pid < 0 and cam < 0:
        return "id ?"
    return f"id {pid}" + (f" c{cam + 1}" if cam >= 0 else "")  # cameras are 0-based, names say c1...


def hit_colour(rec: Dict[str, Any], hit: Dict[str, Any]) -> Tuple[int, int, int]:
    if "match" not in hit:
        return GREY
    if not hit["match"]:
        return RED
    return ORANGE if rec["cam"] >= 0 and hit["cam"] == rec["cam"] else GREEN


def _legend(canvas: np.ndarray) -> None:
    for i, (colour, text) in enumerate(KEYS):
        x, y = PAD + (i % 3) * 200, PAD + (i // 3) * CAPTION
        cv2.rectangle(canvas, (x, y + 2), (x + 10, y + 12), colour, thickness=-1)
        _put(canvas, text, x + 14, y + 11, 186, centre=False)
    cv2.line(canvas, (0, LEGEND - 1), (canvas.shape[1] - 1, LEGEND - 1), (210, 210, 210), 1)


def _draw_one(results: List[Dict[str, Any]], out_path: str, k: int, thumb: Tuple[int, int]) -> Tuple[int, int]:
    height, width = canvas_shape(len(results), k, thumb)
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    _legend(canvas)
    cell_w = thumb[1] + 2 * BORDER
    row_h = (height - LEGEND) // len(results)
    for qi, rec in enumerate(results):
        top = LEGEND + qi * row_h
        _put(canvas, f"query: {os.path.basename(rec['query'])}", PAD, top + PAD + CAPTION - 4, width - 2 * PAD,
             centre=False)
        y = top + PAD + CAPTION
        _cell(canvas, rec["query"], PAD, y, thumb, BLUE, "query", _id_text(rec["pid"], rec["cam"]))
        for j, hit in enumerate(rec["hits"][:k]):
            x = PAD + GAP + (j + 1) * cell_w + j * PAD
            _cell(canvas, hit["path"], x, y, thumb, hit_colour(rec, hit),
                  f"#{hit['rank']} {hit['score']:.3f}", _id_text(hit["pid"], hit["cam"]))
        if qi:
            cv2.line(canvas, (0, top), (width - 1, top), (210, 210, 210), 1)
    if not cv2.imwrite(out_path, canvas):
        raise ConfigError(f"cannot write the picture {out_path} (--vis): check the folder exists and the "
                          f"name ends in .png or .jpg")
    return height, width


def draw_results(results: List[Dict[str, Any]], out_path: str, k: int, thumb: Tuple[int, int] = (128, 64),
                 max_rows: int = DEFAULT_MAX_ROWS) -> List[Dict[str, Any]]:
    """Write ``results`` (from ``hits_as_records``) as pictures of at most ``max_rows`` queries:
    ``out_path`` itself if one is enough, else ``<stem>_001<ext>``, ``<stem>_002<ext>``, ..."""
    if not results:
        raise ConfigError("nothing to draw: no queries")
    if max_rows < 1:
        raise ConfigError(f"--vis-max must be >= 1 (queries per picture), got {max_rows}")
    starts = range(0, len(results), max_rows)
    stem, ext = os.path.splitext(out_path)
    files = []
    for i, start in enumerate(starts, start=1):
        path = out_path if len(starts) == 1 else f"{stem}_{i:03d}{ext}"
        chunk = results[start:start + max_rows]
        h, w = _draw_one(chunk, path, k, thumb)
        files.append({"path": path, "height": h, "width": w, "queries": len(chunk)})
    return files
