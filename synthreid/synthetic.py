"""Synthetic Market-1501: procedurally drawn pedestrians in the exact Market layout.

Why: development and CI machines have no Market-1501, yet the whole unsupervised
pipeline (clustering, ISE, Market evaluation) needs a re-ID set with the same folder
layout, file naming, image size, camera structure, distractors and junk. The images are
drawn with OpenCV so that the task is learnable (an identity keeps its clothes, hair and
bag across cameras) but not trivial (cameras differ in colour cast, brightness, blur,
scale and preferred viewpoint; backgrounds are cluttered; other pedestrians and objects
occlude; groups of identities share the same shirt and differ only in trousers, shoes or
bag, so clustering makes both *mixed* and *sub* errors).

Every random draw comes from a ``numpy.random.Generator`` seeded by ``(seed, what,
which)``, and JPEG quality is fixed per camera, so the same seed gives byte-identical
files. File names follow Market: ``0002_c1s1_000451_01.jpg`` (4-digit id, camera,
sequence, 6-digit frame, 2-digit box); distractors use id ``0000`` and junk ``-1``.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ppise.errors import ConfigError, DataError

__all__ = ["make_synthetic_reid", "make_source_set", "dataset_present", "dataset_root", "MARKET_DIR", "SPLITS"]

MARKET_DIR = os.path.join("market1501", "Market-1501-v15.09.15")
SPLITS = ("bounding_box_train", "bounding_box_test", "query")

IMG_W, IMG_H = 64, 128  # Market bounding boxes are 64 x 128 (w x h)
_SS = 2  # draw at 2x and downsample with INTER_AREA: cheap anti-aliasing
CW, CH = IMG_W * _SS, IMG_H * _SS
_PAD = 12  # tracklet backgrounds are wider so consecutive frames can pan a little
_SHIFT = 4  # sub-pixel precision bits for cv2 drawing
_FX = float(1 << _SHIFT)
NUM_CAMS = 6
MAX_IDS = 1501  # common Market loaders assert 0 <= pid <= 1501

VIEWS = ("front", "back", "side")
PATTERNS = ("plain", "hstripes", "vstripes", "checks", "jacket", "block", "logo")
_PATTERN_P = np.array([0.36, 0.14, 0.07, 0.09, 0.14, 0.1, 0.1])
HAIR_STYLES = ("short", "long", "hat", "cropped")
_HAIR_P = np.array([0.45, 0.25, 0.12, 0.18])
LOWER_TYPES = ("trousers", "shorts", "skirt")
_LOWER_P = np.array([0.72, 0.16, 0.12])
BAGS = ("none", "backpack", "shoulder", "handbag")
_BAG_P = np.array([0.4, 0.3, 0.18, 0.12])

# RGB clothing palette, weighted towards the dark and neutral colours that dominate Market.
_UPPER = np.array([
    (25, 25, 28), (70, 70, 76), (132, 132, 138), (226, 226, 220), (30, 40, 92), (50, 92, 170),
    (132, 172, 212), (172, 30, 36), (110, 26, 38), (222, 142, 172), (40, 112, 62), (132, 126, 80),
    (222, 192, 52), (222, 122, 40), (100, 60, 132), (102, 66, 40), (202, 182, 146)], np.float64)
_UPPER_P = np.array([.17, .1, .08, .13, .07, .07, .05, .05, .03, .04, .04, .04, .03, .02, .03, .02, .04])
_LOWER = np.array([
    (22, 22, 26), (52, 52, 58), (40, 52, 96), (70, 100, 150), (120, 120, 125), (150, 140, 100),
    (205, 190, 160), (90, 62, 42), (200, 200, 196), (30, 60, 40)], np.float64)
_LOWER_PP = np.array([.24, .12, .16, .14, .08, .07, .06, .05, .05, .03])
_SKIN = np.array([(240, 196, 162), (224, 172, 132), (198, 136, 98), (160, 112, 76), (112, 76, 52)], np.float64)
_SKIN_P = np.array([.3, .3, .2, .12, .08])
_HAIR = np.array([(18, 16, 16), (58, 40, 30), (108, 74, 44), (198, 168, 108), (150, 150, 150)], np.float64)
_HAIR_CP = np.array([.5, .25, .1, .08, .07])
_SHOES = np.array([(20, 20, 20), (230, 230, 230), (90, 60, 40), (60, 60, 70), (170, 40, 40)], np.float64)
_SHOES_P = np.array([.45, .3, .12, .08, .05])

_DEFAULTS: Dict[str, Any] = {
    "images_per_id": (12, 20),   # Market averages ~17 train images per identity
    "cams_per_id": (2, 6),
    "distractor_ratio": 0.1,     # id 0000 images, as a fraction of true gallery images
    "junk_ratio": 0.1,           # id -1 images, same base
    "lookalike_prob": 0.6,       # chance an identity group has 2-4 members sharing the shirt
    "occlusion_prob": 0.2,
    "crowd_prob": 0.3,           # another pedestrian partly in the box
    "camera_strength": 1.0,      # 0 = cameras alike, 1 = default cast/light/blur spread, up to 2
    "id_offset": 0,              # identity numbers are id_offset+1 .. id_offset+num_ids
    "train_fraction": 0.5,       # share of the identities in bounding_box_train (the rest test)
    "overwrite": False,
}


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Camera:
    """What makes one camera's images look like that camera's."""

    index: int
    gains: np.ndarray          # per-channel RGB colour cast
    brightness: float
    contrast: float
    blur_sigma: float          # at output resolution
    noise_sigma: float
    scale: float               # person height / box height
    view_p: np.ndarray         # probabilities of front / back / side
    jpeg_quality: int
    wall: np.ndarray
    floor: np.ndarray
    horizon: float
    weight: float              # how often identities pass this camera


@dataclass(frozen=True)
class Identity:
    """Appearance that stays the same across cameras."""

    pid: int
    skin: Tuple[int, int, int]
    hair: Tuple[int, int, int]
    hair_style: str
    upper: Tuple[int, int, int]
    upper2: Tuple[int, int, int]
    pattern: str
    long_sleeves: bool
    lower: Tuple[int, int, int]
    lower_type: str
    shoes: Tuple[int, int, int]
    bag: str
    bag_color: Tuple[int, int, int]
    bag_side: int              # +1 right, -1 left
    build: float               # width factor
    height: float              # height factor


@dataclass(frozen=True)
class Pose:
    """Per-image placement inside the box (detector misalignment) and walking state."""

    view: str
    flip: bool
    scale: float
    dx: float
    dy: float
    phase: float


# ----------------------------------------------------------------------------- helpers
def _tup(c: Sequence[float]) -> Tuple[int, int, int]:
    r, g, b = (min(255, max(0, int(round(float(v))))) for v in c)
    return r, g, b


def _jitter(rng: np.random.Generator, c: np.ndarray, amount: float) -> np.ndarray:
    return c + rng.uniform(-amount, amount, 3)


def _shade(c: Tuple[int, int, int], f: float) -> Tuple[int, int, int]:
    return _tup(np.asarray(c, np.float64) * f)


def _fx(pts: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * _FX).astype(np.int32)


def _poly(img: np.ndarray, pts: Sequence[Tuple[float, float]], color: Tuple[int, ...]) -> None:
    cv2.fillPoly(img, [_fx(pts)], color, cv2.LINE_AA, _SHIFT)


def _pt(p: Tuple[float, float]) -> Tuple[int, int]:
    return int(round(p[0] * _FX)), int(round(p[1] * _FX))


def _line(img: np.ndarray, a: Tuple[float, float], b: Tuple[float, float], color: Tuple[int, ...],
          width: float) -> None:
    cv2.line(img, _pt(a), _pt(b), color, max(1, int(round(width))), cv2.LINE_AA, _SHIFT)


def _ellipse(img: np.ndarray, c: Tuple[float, float], axes: Tuple[float, float], color: Tuple[int, ...],
             start: float = 0.0, end: float = 360.0) -> None:
    cv2.ellipse(img, _pt(c), _pt(axes), 0.0, start, end, color, -1, cv2.LINE_AA, _SHIFT)


def _check_range(name: str, value: Any, lo: int, hi: int) -> Tuple[int, int]:
    """Accept an int or a (min, max) pair; raise ConfigError naming the option otherwise."""
    try:
        pair = (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic option '{name}' must be an int or a (min, max) pair, got {value!r}")
    if len(pair) == 1:
        pair = (pair[0], pair[0])
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < lo or pair[1] > hi:
        raise ConfigError(f"synthetic option '{name}'={value!r} must be a (min, max) pair with "
                          f"{lo} <= min <= max <= {hi}")
    return pair  # type: ignore[return-value]


def _check_prob(name: str, value: Any, hi: float = 1.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic option '{name}' must be a number, got {value!r}")
    if not 0.0 <= v <= hi:
        raise ConfigError(f"synthetic option '{name}'={value!r} must lie in [0, {hi}]")
    return v


# ----------------------------------------------------------------------------- cameras
def _make_cameras(rng: np.random.Generator, strength: float = 1.0) -> List[Camera]:
    """Six cameras with their own cast, light, blur, scale, viewpoint mix and scene.

    ``strength`` scales how far each camera's cast, light, contrast and blur depart from
    a neutral camera (0: all cameras render colours alike; 1: the default spread).
    """
    blur = rng.permutation(np.array([0.0, 0.35, 0.55, 0.75, 0.95, 1.2]))
    cams = []
    for i in range(NUM_CAMS):
        gains = rng.uniform(0.86, 1.14, 3)
        gains = gains / gains.mean() * rng.uniform(0.92, 1.06)
        view_p = rng.dirichlet(np.array([1.5, 1.5, 1.0]))
        view_p = 0.7 * view_p + 0.1  # every view stays possible in every camera
        grey = rng.uniform(80, 180)  # muted scenes like Market's campus: concrete, glass, paving
        wall = np.clip(grey + rng.uniform(-22, 22, 3), 20, 235)
        floor = np.clip(rng.uniform(85, 165) + rng.uniform(-10, 10, 3), 30, 220)
        cams.append(Camera(
            index=i + 1, gains=1.0 + strength * (gains - 1.0), brightness=strength * float(rng.uniform(-18, 14)),
            contrast=1.0 + strength * float(rng.uniform(-0.18, 0.1)), blur_sigma=strength * float(blur[i]),
            noise_sigma=float(rng.uniform(1.5, 6.0)), scale=float(rng.uniform(0.74, 0.93)),
            view_p=view_p / view_p.sum(), jpeg_quality=int(rng.integers(82, 96)),
            wall=wall, floor=floor, horizon=float(rng.uniform(0.35, 0.75)),
            weight=float(rng.uniform(0.6, 1.4))))
    return cams


def _tracklet_background(cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Scene behind one tracklet: wall/floor gradient plus windows, signs, poles, plants."""
    w = CW + 2 * _PAD
    hz = int(cam.horizon * CH)
    ramp = np.linspace(0.85, 1.1, CH)[:, None]
    col = np.where(np.arange(CH)[:, None] < hz, cam.wall[None, :], cam.floor[None, :]) * ramp
    col = np.clip(col + rng.uniform(-10, 10, 3), 0, 255).astype(np.uint8)
    bg = np.repeat(col[:, None, :], w, axis=1)
    for _ in range(int(rng.integers(2, 9))):
        kind = rng.random()
        if kind < 0.4:  # window / door / shop sign
            x0, y0 = rng.uniform(-10, w), rng.uniform(-10, hz + 10)
            ww, hh = rng.uniform(10, 60), rng.uniform(10, 80)
            c = cam.wall * rng.uniform(0.5, 1.3) if rng.random() < 0.75 else rng.uniform(20, 235, 3)
            _poly(bg, [(x0, y0), (x0 + ww, y0), (x0 + ww, y0 + hh), (x0, y0 + hh)], _tup(c))
        elif kind < 0.6:  # pole or tree trunk
            x = rng.uniform(0, w)
            _line(bg, (x, rng.uniform(-5, hz)), (x, rng.uniform(hz, CH)), _tup(rng.uniform(20, 160, 3)),
                  rng.uniform(2, 9))
        elif kind < 0.8:  # bush / plant / lamp
            c = np.array([rng.uniform(20, 90), rng.uniform(70, 150), rng.uniform(20, 80)])
            _ellipse(bg, (rng.uniform(0, w), rng.uniform(0, CH)), (rng.uniform(6, 30), rng.uniform(6, 24)),
                     _tup(c * rng.uniform(0.6, 1.2)))
        else:  # curb / floor tiles
            y = rng.uniform(hz, CH)
            _line(bg, (-5, y), (w + 5, y + rng.uniform(-10, 10)), _tup(cam.floor * rng.uniform(0.6, 1.3)),
                  rng.uniform(1, 4))
    return bg


# ----------------------------------------------------------------------------- identities
def _sample_upper(rng: np.random.Generator) -> Dict[str, Any]:
    up = _UPPER[rng.choice(len(_UPPER), p=_UPPER_P / _UPPER_P.sum())]
    up2 = _UPPER[rng.choice(len(_UPPER), p=_UPPER_P / _UPPER_P.sum())]
    if np.abs(up - up2).sum() < 90:  # a pattern needs visible contrast
        up2 = 255.0 - up2 * 0.8
    return {"upper": _tup(_jitter(rng, up, 14)), "upper2": _tup(_jitter(rng, up2, 14)),
            "pattern": str(rng.choice(PATTERNS, p=_PATTERN_P / _PATTERN_P.sum())),
            "long_sleeves": bool(rng.random() < 0.6)}


def _sample_identity(rng: np.random.Generator, pid: int, upper: Dict[str, Any], lower_idx: int) -> Identity:
    hair_style = str(rng.choice(HAIR_STYLES, p=_HAIR_P))
    lower_type = str(rng.choice(LOWER_TYPES, p=_LOWER_P))
    bag = str(rng.choice(BAGS, p=_BAG_P))
    hat = hair_style == "hat"
    hair = _UPPER[rng.integers(len(_UPPER))] if hat else _HAIR[rng.choice(len(_HAIR), p=_HAIR_CP)]
    return Identity(
        pid=pid, skin=_tup(_jitter(rng, _SKIN[rng.choice(len(_SKIN), p=_SKIN_P)], 8)),
        hair=_tup(_jitter(rng, hair, 10)), hair_style=hair_style,
        lower=_tup(_jitter(rng, _LOWER[lower_idx], 12)), lower_type=lower_type,
        shoes=_tup(_jitter(rng, _SHOES[rng.choice(len(_SHOES), p=_SHOES_P)], 10)),
        bag=bag, bag_color=_tup(_jitter(rng, _UPPER[rng.integers(len(_UPPER))], 20)),
        bag_side=int(rng.choice([-1, 1])), build=float(rng.uniform(0.86, 1.16)),
        height=float(rng.uniform(0.93, 1.04)), **upper)


def _make_identities(pids: Sequence[int], rng: np.random.Generator, lookalike_prob: float) -> List[Identity]:
    """Identities in groups: members of a group share the shirt but differ below the waist."""
    out: List[Identity] = []
    order = rng.permutation(np.asarray(pids))
    i = 0
    lp = _LOWER_PP / _LOWER_PP.sum()
    while i < len(order):
        size = int(rng.integers(2, 5)) if rng.random() < lookalike_prob else 1
        group = order[i:i + size]
        upper = _sample_upper(rng)
        lowers = rng.choice(len(_LOWER), size=len(group), replace=False, p=lp)
        out.extend(_sample_identity(rng, int(p), upper, int(li)) for p, li in zip(group, lowers))
        i += size
    return sorted(out, key=lambda d: d.pid)


def _random_identity(rng: np.random.Generator) -> Identity:
    """A passer-by (crowd, distractor, junk) who is none of the dataset identities."""
    return _sample_identity(rng, 0, _sample_upper(rng), int(rng.integers(len(_LOWER))))


# ----------------------------------------------------------------------------- drawing
def _torso_pattern(img: np.ndarray, mask: np.ndarray, ident: Identity, view: str, cx: float,
                   top: float, bottom: float, hp: float) -> None:
    """Recolour the torso mask with the identity's pattern (vectorised over its box)."""
    ys, xs = np.nonzero(mask > 127)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = mask[y0:y1, x0:x1] > 127
    yy = (np.arange(y0, y1, dtype=np.float64)[:, None] - top) / hp
    xx = (np.arange(x0, x1, dtype=np.float64)[None, :] - cx) / hp
    p = ident.pattern
    period = 0.045
    if p == "hstripes":
        sel = (np.floor(yy / period) % 2 == 1) & np.ones_like(xx, bool)
    elif p == "vstripes":
        sel = (np.floor(xx / period) % 2 == 1) & np.ones_like(yy, bool)
    elif p == "checks":
        sel = (np.floor(yy / period) + np.floor(xx / period)) % 2 == 1
    elif p == "jacket":  # open jacket: inner shirt visible from the front only
        sel = (np.abs(xx) < 0.032) & (yy > 0.02) if view == "front" else np.zeros((1, 1), bool)
    elif p == "block":  # two-tone top
        sel = (yy > 0.52 * (bottom - top) / hp) & np.ones_like(xx, bool)
    elif p == "logo":  # print on the chest, front only
        sel = ((np.abs(xx) < 0.045) & (yy > 0.06) & (yy < 0.15)) if view == "front" else np.zeros((1, 1), bool)
    else:
        return
    sel = np.broadcast_to(sel, m.shape) & m
    img[y0:y1, x0:x1][sel] = ident.upper2


def _draw_person(img: np.ndarray, ident: Identity, pose: Pose) -> None:
    """Draw a pedestrian (facing right when side-on) into a (CH, CW, 3) RGB canvas."""
    hp = pose.scale * ident.height * CH
    cx = CW / 2 + pose.dx * CW
    top = (CH - hp) / 2 + pose.dy * CH
    b = ident.build
    side = pose.view == "side"

    def P(u: float, v: float) -> Tuple[float, float]:
        return cx + u * hp, top + v * hp

    sw = np.sin(pose.phase)
    tw = 0.07 * b if side else 0.118 * b      # shoulder half width
    ww = 0.062 * b if side else 0.096 * b     # waist half width
    leg_w, arm_w = 0.062 * hp * b, 0.042 * hp * b
    skin, lower = ident.skin, ident.lower
    lower_legs = lower if ident.lower_type == "trousers" else skin
    far = 0.78  # far limbs are darker in side view

    # Legs and feet (hip -> knee -> ankle).
    if side:
        legs = [(-1.0, far), (1.0, 1.0)]
        hips = [P(0.0, 0.5)] * 2
    else:
        legs = [(-1.0, 1.0), (1.0, 1.0)]
        hips = [P(-0.048 * b, 0.5), P(0.048 * b, 0.5)]
    for (s, f), hip in zip(legs, hips):
        if side:
            knee, ankle = P(0.06 * sw * s, 0.72), P(0.13 * sw * s, 0.94)
        else:
            lift = 0.018 * max(0.0, sw * s)
            knee, ankle = P(s * 0.052 * b, 0.72 - lift), P(s * (0.05 * b + 0.008 * sw), 0.94 - lift)
        _line(img, hip, knee, _shade(lower_legs, f), leg_w)
        _line(img, knee, ankle, _shade(lower_legs, f), leg_w * 0.85)
        if ident.lower_type == "shorts":
            _line(img, hip, ((hip[0] + knee[0]) / 2, (hip[1] + knee[1]) / 2 + 0.05 * hp), _shade(lower, f), leg_w * 1.1)
        if ident.lower_type == "trousers":
            _line(img, hip, knee, _shade(lower, f), leg_w)
        foot_len = 0.05 if side else 0.03
        _ellipse(img, (ankle[0] + (0.02 * hp if side else 0), ankle[1] + 0.02 * hp), (foot_len * hp, 0.022 * hp),
                 _shade(ident.shoes, f))
    # Hip block and skirt.
    _poly(img, [P(-ww, 0.47), P(ww, 0.47), P(ww * 0.95, 0.565), P(-ww * 0.95, 0.565)], lower)
    if ident.lower_type == "skirt":
        _poly(img, [P(-ww, 0.47), P(ww, 0.47), P(ww * 1.55, 0.7), P(-ww * 1.55, 0.7)], lower)

    # Backpack seen from the side sits behind the torso.
    if ident.bag == "backpack" and side:
        _poly(img, [P(-tw - 0.075, 0.18), P(-tw + 0.01, 0.17), P(-tw + 0.01, 0.43), P(-tw - 0.07, 0.42)], ident.bag_color)
    shoulder_y, elbow_y, hand_y = 0.17, 0.32, 0.455

    def arm(sh: Tuple[float, float], el: Tuple[float, float], ha: Tuple[float, float], f: float) -> None:
        _line(img, sh, el, _shade(ident.upper if ident.long_sleeves else skin, f), arm_w)
        _line(img, el, ha, _shade(ident.upper if ident.long_sleeves else skin, f), arm_w * 0.9)
        if not ident.long_sleeves:  # short sleeve over the upper arm
            mid = (sh[0] + (el[0] - sh[0]) * 0.55, sh[1] + (el[1] - sh[1]) * 0.55)
            _line(img, sh, mid, _shade(ident.upper, f), arm_w * 1.15)
        _ellipse(img, ha, (0.022 * hp, 0.026 * hp), _shade(skin, f))

    if side:  # the far arm goes behind the torso
        arm(P(0.0, shoulder_y), P(-0.05 * sw, elbow_y), P(-0.09 * sw, hand_y), far)

    # Torso with its pattern.
    torso_uv = [(-0.035, 0.128), (-tw, 0.158), (-tw * 0.97, 0.26), (-ww, 0.5), (ww, 0.5), (tw * 0.97, 0.26),
                (tw, 0.158), (0.035, 0.128)]
    lean = 0.012 if side else 0.0  # walking side-on, the chest leads
    torso = [P(u + lean * (1 - v), v) for u, v in torso_uv]
    _poly(img, torso, ident.upper)
    if ident.pattern != "plain":
        mask = np.zeros(img.shape[:2], np.uint8)
        _poly(mask, torso, (255,))
        _torso_pattern(img, mask, ident, pose.view, cx, top + 0.128 * hp, top + 0.5 * hp, hp)

    # Backpack from behind covers the back; from the front only straps show.
    if ident.bag == "backpack" and pose.view == "back":
        _poly(img, [P(-0.085 * b, 0.185), P(0.085 * b, 0.185), P(0.08 * b, 0.43), P(-0.08 * b, 0.43)], ident.bag_color)
        _poly(img, [P(-0.05 * b, 0.33), P(0.05 * b, 0.33), P(0.05 * b, 0.41), P(-0.05 * b, 0.41)],
              _shade(ident.bag_color, 0.75))
    elif ident.bag == "backpack" and pose.view == "front":
        for s in (-1, 1):
            _line(img, P(s * 0.075 * b, 0.155), P(s * 0.08 * b, 0.36), ident.bag_color, 0.02 * hp)

    # Near arms.
    if side:
        arm(P(0.0, shoulder_y), P(0.05 * sw, elbow_y), P(0.09 * sw, hand_y), 1.0)
    else:
        for s in (-1, 1):
            arm(P(s * (tw - 0.012), shoulder_y), P(s * (tw + 0.012) + 0.012 * sw * s, elbow_y),
                P(s * (tw + 0.005) + 0.01 * sw, hand_y), 1.0)

    # Shoulder bag strap across the body and the bag at the opposite hip; handbag in a hand.
    if ident.bag == "shoulder":
        s = ident.bag_side
        _line(img, P(s * 0.08 * b, 0.15), P(-s * 0.1 * b, 0.44), _shade(ident.bag_color, 0.8), 0.014 * hp)
        bx = -s * 0.13 * b if not side else -0.02
        _poly(img, [P(bx - 0.05, 0.41), P(bx + 0.05, 0.41), P(bx + 0.05, 0.53), P(bx - 0.05, 0.53)], ident.bag_color)
    elif ident.bag == "handbag":
        hx = (ident.bag_side * (tw + 0.01)) if not side else 0.09 * sw
        _poly(img, [P(hx - 0.035, 0.46), P(hx + 0.035, 0.46), P(hx + 0.045, 0.57), P(hx - 0.045, 0.57)], ident.bag_color)

    # Neck, hair behind, head, hair on top.
    _line(img, P(0.0, 0.1), P(0.0, 0.14), skin, 0.04 * hp)
    hx = 0.012 if side else 0.0
    head_c, head_ax = P(hx, 0.068), (0.047 * hp, 0.06 * hp)
    if ident.hair_style == "long":
        _poly(img, [P(hx - 0.058, 0.05), P(hx + (0.02 if side else 0.058), 0.05),
                    P(hx + (0.0 if side else 0.066), 0.22), P(hx - 0.066, 0.22)], ident.hair)
    _ellipse(img, head_c, head_ax, ident.hair if pose.view == "back" and ident.hair_style != "hat" else skin)
    if ident.hair_style == "hat":
        _ellipse(img, (head_c[0], head_c[1] - 0.012 * hp), (0.05 * hp, 0.045 * hp), ident.hair, 180, 360)
        brim_dx = 0.03 if side else 0.0
        _line(img, P(hx - 0.05 + brim_dx, 0.058), P(hx + 0.05 + brim_dx * 1.4, 0.058), _shade(ident.hair, 0.8), 0.012 * hp)
    elif pose.view != "back":
        cover = 0.03 if ident.hair_style == "cropped" else 0.045
        _ellipse(img, (head_c[0] - (0.01 * hp if side else 0), head_c[1] - 0.01 * hp),
                 (0.05 * hp, (0.045 + cover * 0.2) * hp), ident.hair, 180, 360)
        if side:  # hair at the back of the head
            _ellipse(img, (head_c[0] - 0.02 * hp, head_c[1]), (0.03 * hp, 0.05 * hp), ident.hair)


def _draw_occluder(img: np.ndarray, rng: np.random.Generator) -> None:
    """Partial occlusion: a car bonnet / bench / bike at the bottom or a pole at the side."""
    grey = rng.uniform(20, 210)  # mostly neutral objects, sometimes a coloured car or bin
    c = _tup(grey + rng.uniform(-30, 30, 3) if rng.random() < 0.7 else rng.uniform(15, 230, 3))
    if rng.random() < 0.6:
        y = CH * rng.uniform(0.62, 0.85)
        x0, x1 = rng.uniform(-30, CW * 0.4), rng.uniform(CW * 0.6, CW + 30)
        _poly(img, [(x0, y + rng.uniform(-12, 12)), (x1, y + rng.uniform(-12, 12)), (x1, CH + 2), (x0, CH + 2)], c)
        _line(img, (x0, y), (x1, y), _shade(c, 1.3), rng.uniform(2, 6))
    else:
        x = CW * (rng.uniform(-0.05, 0.22) if rng.random() < 0.5 else rng.uniform(0.78, 1.05))
        w = CW * rng.uniform(0.1, 0.24)
        _poly(img, [(x - w / 2, -2), (x + w / 2, -2), (x + w / 2, CH + 2), (x - w / 2, CH + 2)], c)


def _camera_effects(img: np.ndarray, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """Downsample to 64x128, then the camera's cast, light, contrast, blur and sensor noise."""
    small = cv2.resize(img, (IMG_W, IMG_H), interpolation=cv2.INTER_AREA).astype(np.float32)
    gains = cam.gains.astype(np.float32)[None, None, :]
    small = (small * gains - 128.0) * np.float32(cam.contrast) + np.float32(128.0 + cam.brightness + rng.uniform(-8, 8))
    if cam.blur_sigma > 0:
        small = cv2.GaussianBlur(small, (0, 0), cam.blur_sigma)
    small += rng.standard_normal(small.shape, dtype=np.float32) * np.float32(cam.noise_sigma)
    return np.clip(small + 0.5, 0, 255).astype(np.uint8)


def _compose(bg: np.ndarray, ident: Optional[Identity], pose: Pose, cam: Camera, rng: np.random.Generator,
             crowd_prob: float, occlusion_prob: float) -> np.ndarray:
    """One box: background crop, maybe a passer-by, the person, maybe an occluder, camera look."""
    off = int(rng.integers(0, bg.shape[1] - CW + 1))
    img = np.ascontiguousarray(bg[:, off:off + CW])
    crowd = None
    if rng.random() < crowd_prob:
        other = _random_identity(rng)
        side = 1.0 if rng.random() < 0.5 else -1.0
        cpose = Pose(view=str(rng.choice(VIEWS)), flip=False, scale=pose.scale * rng.uniform(0.85, 1.12),
                     dx=side * rng.uniform(0.42, 0.66), dy=rng.uniform(-0.05, 0.05), phase=rng.uniform(0, 2 * np.pi))
        crowd = (other, cpose, rng.random() < 0.4)
        if not crowd[2]:
            _draw_person(img, other, cpose)
    if ident is not None:
        _draw_person(img, ident, pose)
    if crowd is not None and crowd[2]:
        _draw_person(img, crowd[0], crowd[1])
    if rng.random() < occlusion_prob:
        _draw_occluder(img, rng)
    if pose.flip:
        img = np.ascontiguousarray(img[:, ::-1])
    return _camera_effects(img, cam, rng)


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class _Tracklet:
    """Consecutive frames of one identity in one camera (Market's same-camera images)."""

    split: str          # "train" or "test"
    ident: Identity
    cam: int            # 1..6
    seq: int            # 1..6
    frames: np.ndarray  # increasing 6-digit frame numbers
    boxes: np.ndarray   # 2-digit box indices
    query: int          # index of the query frame (test), -1 for train


def _plan_tracklets(idents: Sequence[Identity], split: str, cams: Sequence[Camera], rng: np.random.Generator,
                    n_range: Tuple[int, int], c_range: Tuple[int, int]) -> List[_Tracklet]:
    """Images per identity, the cameras it passes (>= 2) and >= 2 frames per camera."""
    w = np.array([c.weight for c in cams])
    out: List[_Tracklet] = []
    for ident in idents:
        n = int(rng.integers(n_range[0], n_range[1] + 1))
        n_cams = int(rng.integers(c_range[0], min(c_range[1], n // 2) + 1))
        chosen = np.sort(rng.choice(NUM_CAMS, size=n_cams, replace=False, p=w / w.sum()))
        counts = 2 + rng.multinomial(n - 2 * n_cams, rng.dirichlet(np.full(n_cams, 2.0)))
        for ci, k in zip(chosen, counts):
            frames = int(rng.integers(100, 150000)) + np.cumsum(rng.integers(3, 40, size=int(k)))
            boxes = rng.choice(np.array([1, 1, 1, 1, 2, 3]), size=int(k))
            out.append(_Tracklet(split, ident, int(ci) + 1, int(rng.integers(1, 7)), frames, boxes,
                                 int(rng.integers(int(k))) if split == "test" else -1))
    return out


def _market_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    head = "-1" if pid < 0 else f"{pid:04d}"
    return f"{head}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _write_jpg(path: str, rgb: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DataError(f"could not encode JPEG for {path}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


def _render_tracklet(t: _Tracklet, cam: Camera, seed: int, opts: Dict[str, Any]) -> List[np.ndarray]:
    """All frames of a tracklet: same scene and view, drifting position, walking phase."""
    rng = np.random.default_rng([seed, 3, t.ident.pid, t.cam])
    bg = _tracklet_background(cam, rng)
    view = str(rng.choice(VIEWS, p=cam.view_p))
    flip = bool(view == "side" and rng.random() < 0.5)
    scale = cam.scale * rng.uniform(0.93, 1.07)
    dx, dy = rng.uniform(-0.06, 0.06), rng.uniform(-0.04, 0.04)
    phase, step = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.6)
    imgs = []
    for k in range(len(t.frames)):
        v = view if rng.random() > 0.12 else str(rng.choice(VIEWS, p=cam.view_p))  # people turn
        pose = Pose(view=v, flip=flip and v == "side", scale=scale * rng.uniform(0.96, 1.04),
                    dx=dx + rng.uniform(-0.04, 0.04), dy=dy + rng.uniform(-0.025, 0.025), phase=phase + k * step)
        imgs.append(_compose(bg, t.ident, pose, cam, rng, opts["crowd_prob"], opts["occlusion_prob"]))
    return imgs


def _render_extra(kind: str, k: int, seed: int, cams: Sequence[Camera], opts: Dict[str, Any]) -> Tuple[int, np.ndarray]:
    """A distractor (false detection: scene, maybe a body fragment) or junk (badly cropped person)."""
    rng = np.random.default_rng([seed, 4 if kind == "distractor" else 5, k])
    cam = cams[int(rng.integers(NUM_CAMS))]
    bg = _tracklet_background(cam, rng)
    view = str(rng.choice(VIEWS))
    if kind == "junk" or rng.random() < 0.5:
        ident: Optional[Identity] = _random_identity(rng)
        if rng.random() < 0.5:   # zoomed in: only part of a body
            pose = Pose(view, False, rng.uniform(1.4, 2.4), rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5), rng.uniform(0, 6.3))
        else:                    # far off-centre
            pose = Pose(view, False, rng.uniform(0.5, 1.0), rng.choice([-1, 1]) * rng.uniform(0.35, 0.6),
                        rng.uniform(-0.3, 0.3), rng.uniform(0, 6.3))
    else:
        ident, pose = None, Pose(view, False, cam.scale, 0.0, 0.0, 0.0)
    return cam.index, _compose(bg, ident, pose, cam, rng, 0.5, opts["occlusion_prob"])


# ----------------------------------------------------------------------------- public API
def dataset_root(image_root: str) -> str:
    """``image_root/market1501/Market-1501-v15.09.15``: where Market loaders look."""
    return os.path.join(image_root, MARKET_DIR)


def dataset_present(image_root: str) -> bool:
    """True when ``bounding_box_train`` under ``image_root`` already holds at least one jpg."""
    train = os.path.join(dataset_root(image_root), "bounding_box_train")
    if not os.path.isdir(train):
        return False
    with os.scandir(train) as it:
        return any(e.is_file() and e.name.lower().endswith(".jpg") for e in it)


def _check_options(num_ids: Any, seed: Any, options: Dict[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown synthetic option(s) {unknown}; known: {sorted(_DEFAULTS)}")
    if isinstance(num_ids, bool) or not isinstance(num_ids, (int, np.integer)) or not 2 <= int(num_ids) <= MAX_IDS:
        raise ConfigError(f"synthetic 'num_ids'={num_ids!r} must be an int in [2, {MAX_IDS}] (half train, half test)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"synthetic 'seed'={seed!r} must be a non-negative int")
    opts = dict(_DEFAULTS, **options)
    opts["images_per_id"] = _check_range("images_per_id", opts["images_per_id"], 4, 500)
    opts["cams_per_id"] = _check_range("cams_per_id", opts["cams_per_id"], 2, NUM_CAMS)
    for key in ("lookalike_prob", "occlusion_prob", "crowd_prob"):
        opts[key] = _check_prob(key, opts[key])
    opts["camera_strength"] = _check_prob("camera_strength", opts["camera_strength"], hi=2.0)
    for key in ("distractor_ratio", "junk_ratio"):
        opts[key] = _check_prob(key, opts[key], hi=10.0)
    off = opts["id_offset"]
    if isinstance(off, bool) or not isinstance(off, (int, np.integer)) or not 0 <= int(off) <= MAX_IDS - int(num_ids):
        raise ConfigError(f"synthetic 'id_offset'={off!r} must be an int in [0, {MAX_IDS} - num_ids] "
                          f"(identity numbers stay <= {MAX_IDS})")
    opts["id_offset"] = int(off)
    frac = opts["train_fraction"]
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0.0 < float(frac) < 1.0:
        raise ConfigError(f"synthetic 'train_fraction'={frac!r} must lie in (0, 1)")
    opts["train_fraction"] = float(frac)
    if not 1 <= int(int(num_ids) * opts["train_fraction"]) <= int(num_ids) - 1:
        raise ConfigError(f"synthetic num_ids={num_ids} with train_fraction={frac} leaves a split without identities")
    opts["overwrite"] = bool(opts["overwrite"])
    return opts


def _prepare_target(final: str, overwrite: bool) -> None:
    if os.path.exists(final) and not os.path.isdir(final):
        raise DataError(f"synthetic dataset target {final} exists and is not a folder")
    if os.path.isdir(final) and os.listdir(final):
        if not overwrite:
            raise DataError(f"synthetic dataset target {final} is not empty; pass overwrite=True "
                            f"(--overwrite) to replace it or choose another --out")
        shutil.rmtree(final)
    elif os.path.isdir(final):
        os.rmdir(final)


def make_synthetic_reid(out_dir: str, num_ids: int = 100, seed: int = 0, **options: Any) -> Dict[str, Any]:
    """Write a synthetic Market-1501 under ``out_dir/market1501/Market-1501-v15.09.15``.

    ``train_fraction`` of the identities (default half, rounded down) train, the rest test; each test identity gives one
    query per camera it appears in, the rest of its images plus distractors (0000) and
    junk (-1) form ``bounding_box_test``. Options: ``images_per_id`` (min, max),
    ``cams_per_id`` (min, max), ``distractor_ratio``, ``junk_ratio``, ``lookalike_prob``,
    ``occlusion_prob``, ``crowd_prob``, ``camera_strength``, ``id_offset`` (identity numbers
    start at ``id_offset + 1``), ``train_fraction``, ``overwrite``. The folder appears atomically
    (written to a temporary sibling, then renamed), so a crash never leaves a half set
    that :func:`dataset_present` would accept.
    """
    opts = _check_options(num_ids, seed, options)
    num_ids, seed = int(num_ids), int(seed)
    t0 = time.perf_counter()
    final = dataset_root(out_dir)
    parent = os.path.dirname(final)
    try:
        os.makedirs(parent, exist_ok=True)
        _prepare_target(final, opts["overwrite"])
    except OSError as e:
        raise DataError(f"cannot create synthetic dataset folder {final}: {e}") from e

    cams = _make_cameras(np.random.default_rng([seed, 1]), opts["camera_strength"])
    plan_rng = np.random.default_rng([seed, 0])
    pids = plan_rng.permutation(np.arange(1, num_ids + 1) + opts["id_offset"])
    n_train = int(num_ids * opts["train_fraction"])
    train_ids = _make_identities(np.sort(pids[:n_train]), np.random.default_rng([seed, 2, 0]), opts["lookalike_prob"])
    test_ids = _make_identities(np.sort(pids[n_train:]), np.random.default_rng([seed, 2, 1]), opts["lookalike_prob"])
    tracklets = (_plan_tracklets(train_ids, "train", cams, plan_rng, opts["images_per_id"], opts["cams_per_id"])
                 + _plan_tracklets(test_ids, "test", cams, plan_rng, opts["images_per_id"], opts["cams_per_id"]))

    tmp = os.path.join(parent, f".tmp-{os.path.basename(final)}-{os.getpid()}")
    counts = {s: 0 for s in SPLITS}
    try:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        for s in SPLITS:
            os.makedirs(os.path.join(tmp, s))
        for t in tracklets:
            cam = cams[t.cam - 1]
            for k, img in enumerate(_render_tracklet(t, cam, seed, opts)):
                split = "bounding_box_train" if t.split == "train" else ("query" if k == t.query else "bounding_box_test")
                name = _market_name(t.ident.pid, t.cam, t.seq, int(t.frames[k]), int(t.boxes[k]))
                _write_jpg(os.path.join(tmp, split, name), img, cam.jpeg_quality)
                counts[split] += 1
        n_true_gallery = counts["bounding_box_test"]
        extras = {"distractor": 0, "junk": 0}
        for kind, ratio, pid in (("distractor", opts["distractor_ratio"], 0), ("junk", opts["junk_ratio"], -1)):
            n = int(round(ratio * n_true_gallery)) if ratio > 0 else 0
            n = max(n, 1) if ratio > 0 else 0
            frames = np.sort(np.random.default_rng([seed, 6, pid + 1]).choice(999999, size=n, replace=False))
            for k in range(n):
                cam_idx, img = _render_extra(kind, k, seed, cams, opts)
                name = _market_name(pid, cam_idx, 1 + k % 6, int(frames[k]), 1 + k % 3)
                _write_jpg(os.path.join(tmp, "bounding_box_test", name), img, cams[cam_idx - 1].jpeg_quality)
            extras[kind] = n
            counts["bounding_box_test"] += n
        os.replace(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write synthetic dataset under {final}: {e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "root": final,
        "image_root": out_dir,
        "seed": seed,
        "num_cameras": NUM_CAMS,
        "num_train_ids": len(train_ids),
        "num_test_ids": len(test_ids),
        "num_train_images": counts["bounding_box_train"],
        "num_query_images": counts["query"],
        "num_gallery_images": counts["bounding_box_test"],
        "num_distractors": extras["distractor"],
        "num_junk": extras["junk"],
        "seconds": round(time.perf_counter() - t0, 2),
    }


# Source sets for supervised pre-training: another seed family and identity numbers above
# any demo target's (the demo uses 1..100), so source and target share no identity.
SOURCE_SEED_OFFSET = 1000
SOURCE_ID_OFFSET = 1000


def make_source_set(out_dir: str, num_ids: int = 200, seed: int = 0, **options: Any) -> Dict[str, Any]:
    """A labelled source set: seed ``SOURCE_SEED_OFFSET + seed`` (other people, other cameras),
    identities numbered from ``SOURCE_ID_OFFSET + 1`` and 80 % of them in ``bounding_box_train``
    (the rest give a small query/gallery to watch the pre-training). Same options as
    :func:`make_synthetic_reid`; ``id_offset`` and ``train_fraction`` may be overridden.
    """
    options.setdefault("id_offset", min(SOURCE_ID_OFFSET, MAX_IDS - int(num_ids)))
    options.setdefault("train_fraction", 0.8)
    return make_synthetic_reid(out_dir, num_ids=num_ids, seed=SOURCE_SEED_OFFSET + int(seed), **options)
