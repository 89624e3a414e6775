"""Image ops with PaddleClas names, semantics and list-of-dicts config; sizes are ``[w, h]``.

Ops take HWC arrays (or PIL images) and draw from Python ``random`` / numpy's global RNG as
PaddleClas does, so per-worker seeding works; the eval ops are deterministic.
"""
from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..registry import TRANSFORMS

_CV2_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA,
               "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4,
               "random": (cv2.INTER_LINEAR, cv2.INTER_CUBIC)}
_PIL_NAMES = ("nearest", "bilinear", "bicubic", "box", "lanczos", "hamming")
_PIL_INTERP = {name: getattr(Image, name.upper()) for name in _PIL_NAMES}
_PIL_INTERP["random"] = (Image.BILINEAR, Image.BICUBIC)
# PaddleClas 'reflect' / 'symmetric' follow torchvision: reflect does not repeat the edge pixel.
_CV2_BORDER = {"constant": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE,
               "reflect": cv2.BORDER_REFLECT_101, "symmetric": cv2.BORDER_REFLECT}

Img = Union[np.ndarray, Image.Image]


def _number(value: Any, name: str) -> float:
    """PaddleClas ``eval``s strings such as ``'1.0/255.0'``; parse them safely instead."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        num, slash, den = value.partition("/")
        try:
            return float(Fraction(num.strip()) / Fraction(den.strip())) if slash else float(value)
        except (ValueError, ZeroDivisionError):
            pass
    raise ConfigError(f"{name}={value!r} is not a number (use e.g. 0.5 or '1.0/255.0')")


def _size_wh(size: Any, name: str) -> tuple:
    """``int`` or ``[w, h]`` -> (w, h) positive ints."""
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ConfigError(f"{name}={size!r} must be a positive int or a list [w, h] of positive ints")
    return int(size[0]), int(size[1])


def _border(padding: Any) -> tuple:
    """PIL ImageOps.expand border convention -> (left, top, right, bottom)."""
    pads = [padding] if isinstance(padding, int) and not isinstance(padding, bool) else padding
    listed = isinstance(pads, (list, tuple)) and len(pads) in (1, 2, 4)
    if listed and all(isinstance(p, int) and p >= 0 for p in pads):
        return tuple(pads) * (4 // len(pads))  # [a] -> a, a, a, a; [a, b] -> a, b, a, b
    raise ConfigError(f"Pad padding={padding!r} must be an int, [left/right, top/bottom] or [left, top, right, bottom] (>= 0)")


def _pad(img: np.ndarray, ltrb: tuple, fill: Any, mode: str) -> np.ndarray:
    if not any(ltrb):
        return img
    left, top, right, bottom = ltrb
    channels = img.shape[2] if img.ndim == 3 else 1
    value = (fill,) * channels if isinstance(fill, (int, float)) else fill
    out = cv2.copyMakeBorder(img, top, bottom, left, right, _CV2_BORDER[mode], value=tuple(float(v) for v in value))
    return out[:, :, None] if out.ndim < img.ndim else out  # cv2 drops a single channel axis


@TRANSFORMS.register
class ResizeImage:
    """Resize to ``size=[w, h]`` (or the short side to ``resize_short``) with cv2 or PIL."""

    def __init__(self, size: Any = None, resize_short: Optional[int] = None, interpolation: Any = None,
                 backend: str = "cv2", return_numpy: bool = True) -> None:
        if resize_short is not None and resize_short > 0:
            self.resize_short, self.wh = int(resize_short), None
        elif size is not None:
            self.resize_short, self.wh = None, _size_wh(size, "ResizeImage size")
        else:
            raise ConfigError("ResizeImage needs 'size' ([w, h]) or 'resize_short'")
        self.backend = str(backend).lower()
        table = {"cv2": _CV2_INTERP, "pil": _PIL_INTERP}.get(self.backend)
        if table is None:
            raise ConfigError(f"ResizeImage backend={backend!r} must be 'cv2' or 'pil'")
        if interpolation is None:  # cv2 default INTER_LINEAR; PIL's own default for resize is BICUBIC
            interpolation = "bilinear" if self.backend == "cv2" else "bicubic"
        if isinstance(interpolation, str):
            if interpolation.lower() not in table:
                raise ConfigError(f"ResizeImage interpolation={interpolation!r} is unknown for backend "
                                  f"'{self.backend}'; choose one of {', '.join(table)}")
            interpolation = table[interpolation.lower()]
        self.interpolation = interpolation
        self.return_numpy = bool(return_numpy)  # ppise always hands arrays on; kept for config compatibility

    def _target(self, w: int, h: int) -> tuple:
        if self.resize_short is None:
            return self.wh
        scale = self.resize_short / min(w, h)
        return int(round(w * scale)), int(round(h * scale))

    def __call__(self, img: Img) -> np.ndarray:
        interp = self.interpolation
        if isinstance(interp, tuple):
            interp = random.choice(interp)
        if self.backend == "pil":
            pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
            return np.array(pil.resize(self._target(*pil.size), interp))
        img = np.asarray(img)
        h, w = img.shape[:2]
        return cv2.resize(img, self._target(w, h), interpolation=interp)


@TRANSFORMS.register
class RandFlipImage:
    """With probability 0.5 flip: 1 horizontally, 0 vertically, -1 both (cv2.flip codes)."""

    def __init__(self, flip_code: int = 1) -> None:
        if flip_code not in (-1, 0, 1):
            raise ConfigError(f"RandFlipImage flip_code={flip_code!r} must be 1 (horizontal), 0 (vertical) or -1 (both)")
        self.flip_code = flip_code

    def __call__(self, img: Img) -> np.ndarray:
        img = np.asarray(img)
        if random.randint(0, 1) == 1:
            flipped = cv2.flip(img, self.flip_code)
            return flipped[:, :, None] if img.ndim == 3 and flipped.ndim == 2 else flipped
        return img


@TRANSFORMS.register
class Pad:
    """Pad every side (PIL ``ImageOps.expand`` border convention) with ``fill``. PaddleClas
    ignores ``padding_mode`` (always constant); ppise honours it. Both backends give one array."""

    def __init__(self, padding: Any, fill: Any = 0, padding_mode: str = "constant", backend: str = "pil") -> None:
        self.ltrb = _border(padding)
        if padding_mode not in _CV2_BORDER:
            raise ConfigError(f"Pad padding_mode={padding_mode!r} must be one of {', '.join(_CV2_BORDER)}")
        if str(backend).lower() not in ("pil", "cv2"):
            raise ConfigError(f"Pad backend={backend!r} must be 'pil' or 'cv2'")
        self.fill, self.padding_mode = fill, padding_mode

    def __call__(self, img: Img) -> np.ndarray:
        return _pad(np.asarray(img), self.ltrb, self.fill, self.padding_mode)


@TRANSFORMS.register
class RandomCrop:
    """A uniformly placed ``size=[w, h]`` window, no resize (PaddleClas RandomCropImage); with
    ``pad_if_needed`` a too-small image is first padded evenly, as paddle.vision's RandomCrop."""

    def __init__(self, size: Any, pad_if_needed: bool = False, fill: Any = 0, padding_mode: str = "constant") -> None:
        self.tw, self.th = _size_wh(size, f"{type(self).__name__} size")
        if padding_mode not in _CV2_BORDER:
            raise ConfigError(f"{type(self).__name__} padding_mode={padding_mode!r} must be one of {', '.join(_CV2_BORDER)}")
        self.pad_if_needed, self.fill, self.padding_mode = bool(pad_if_needed), fill, padding_mode

    def __call__(self, img: Img) -> np.ndarray:
        img = np.asarray(img)
        h, w = img.shape[:2]
        if (h < self.th or w < self.tw) and self.pad_if_needed:
            dw, dh = max(self.tw - w, 0), max(self.th - h, 0)
            img = _pad(img, (dw // 2, dh // 2, dw - dw // 2, dh - dh // 2), self.fill, self.padding_mode)
            h, w = img.shape[:2]
        if h < self.th or w < self.tw:
            raise ConfigError(f"{type(self).__name__} size [w, h]=[{self.tw}, {self.th}] is larger than the image "
                              f"(w={w}, h={h}); set pad_if_needed: true, pad first, or crop smaller")
        top = random.randint(0, h - self.th)
        left = random.randint(0, w - self.tw)
        return img[top:top + self.th, left:left + self.tw]


@TRANSFORMS.register
class RandomCropImage(RandomCrop):
    """PaddleClas name for the same crop (size [w, h])."""


@TRANSFORMS.register
class RandCropImageV2(RandomCrop):
    """PaddleClas name for the same crop; PaddleClas's own can place it one pixel past the edge."""


@TRANSFORMS.register
class NormalizeImage:
    """``(img * scale - mean) / std``; ``order='chw'`` (PaddleClas default) expects CHW input,
    any other order (PaddleClas configs use ``''``) expects HWC."""

    def __init__(self, scale: Any = None, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 order: str = "chw", output_fp16: bool = False, channel_num: int = 3) -> None:
        if channel_num not in (3, 4):
            raise ConfigError(f"NormalizeImage channel_num={channel_num!r} must be 3 or 4")
        self.scale = np.float32(_number(scale, "NormalizeImage scale") if scale is not None else 1.0 / 255.0)
        self.order, self.channel_num = order, channel_num
        self.dtype = np.float16 if output_fp16 else np.float32
        shape = (3, 1, 1) if order == "chw" else (1, 1, 3)
        mean = [0.485, 0.456, 0.406] if mean is None else mean
        std = [0.229, 0.224, 0.225] if std is None else std
        try:
            self.mean = np.asarray(mean, dtype=np.float32).reshape(shape)
            self.std = np.asarray(std, dtype=np.float32).reshape(shape)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"NormalizeImage mean={mean!r} / std={std!r} must be 3 numbers each") from err

    def __call__(self, img: Img) -> np.ndarray:
        img = np.asarray(img)
        axis = 0 if self.order == "chw" else 2
        if img.ndim != 3 or img.shape[axis] != 3:
            want = "CHW (order: 'chw')" if self.order == "chw" else f"HWC (order: {self.order!r})"
            raise ConfigError(f"NormalizeImage expects a {want} image but got shape {tuple(img.shape)}; "
                              "use order: '' before ToCHWImage, or order: 'chw' after it")
        out = (img.astype(np.float32) * self.scale - self.mean) / self.std
        if self.channel_num == 4:  # a zero fourth channel
            out = np.pad(out, [(0, int(a == axis)) for a in range(3)])
        return out.astype(self.dtype)


@TRANSFORMS.register
class RandomErasing:
    """Random Erasing (Zhong et al.) on an HWC image, PaddleClas semantics: with probability
    EPSILON try up to ``attempt`` rectangles of area in [sl, sh] x image area and aspect in
    [r1, 1/r1] (log-uniform if ``use_log_aspect``); fill with ``mean`` ('const'), one normal
    colour ('rand') or per-pixel normal noise ('pixel')."""

    MODES = ("const", "rand", "pixel")

    def __init__(self, EPSILON: Any = 0.5, sl: Any = 0.02, sh: Any = 0.4, r1: Any = 0.3,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), attempt: int = 100, use_log_aspect: bool = False,
                 mode: str = "const") -> None:
        self.EPSILON = _number(EPSILON, "RandomErasing EPSILON")
        self.sl, self.sh = _number(sl, "RandomErasing sl"), _number(sh, "RandomErasing sh")
        r1 = _number(r1, "RandomErasing r1")
        if r1 <= 0:
            raise ConfigError(f"RandomErasing r1={r1} must be > 0")
        self.use_log_aspect = bool(use_log_aspect)
        self.r1 = (math.log(r1), math.log(1 / r1)) if self.use_log_aspect else (r1, 1 / r1)
        if mode not in self.MODES:
            raise ConfigError(f"RandomErasing mode={mode!r} must be one of {', '.join(self.MODES)}")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.attempt, self.mode = int(attempt), mode

    def __call__(self, img: Img) -> np.ndarray:
        img = np.asarray(img)
        if random.random() > self.EPSILON:
            return img
        if not img.flags.writeable:
            img = img.copy()
        height, width = img.shape[:2]
        for _ in range(self.attempt):
            target_area = random.uniform(self.sl, self.sh) * height * width
            aspect = random.uniform(*self.r1)
            if self.use_log_aspect:
                aspect = math.exp(aspect)
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if w < width and h < height:
                pixels = self.mean
                if self.mode == "rand":
                    pixels = np.random.normal(size=(1, 1, 3))
                elif self.mode == "pixel":
                    pixels = np.random.normal(size=(h, w, img.shape[2]))
                top = random.randint(0, height - h)
                left = random.randint(0, width - w)
                region = img[top:top + h, left:left + w]
                if img.shape[2] == 3:
                    region[:] = pixels
                else:  # PaddleClas erases only the first channel of non-RGB images
                    region[..., 0] = np.broadcast_to(pixels, (h, w, np.shape(pixels)[-1]))[..., 0]
                return img
        return img


@TRANSFORMS.register
class ToCHWImage:
    """HWC -> CHW; the dataset skips its own final transpose when this op is present."""

    to_chw = True

    def __call__(self, img: Img) -> np.ndarray:
        return np.asarray(img).transpose((2, 0, 1))


@TRANSFORMS.register
class ToTensor:
    """paddle.vision's ToTensor (used by PaddleClas re-ID configs): uint8 -> [0, 1] float32,
    HWC -> CHW for ``data_format='CHW'``; a numpy array, so batches can cross processes."""

    def __init__(self, data_format: str = "CHW", keys: Any = None) -> None:
        if data_format not in ("CHW", "HWC"):
            raise ConfigError(f"ToTensor data_format={data_format!r} must be 'CHW' or 'HWC'")
        self.to_chw = data_format == "CHW"

    def __call__(self, img: Img) -> np.ndarray:
        img = np.asarray(img)
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
        return img.transpose((2, 0, 1)) if self.to_chw else img


@TRANSFORMS.register
class Normalize:
    """paddle.vision's Normalize (used after ToTensor in PaddleClas re-ID configs):
    ``(img - mean) / std`` on a CHW (default) or HWC image, optional BGR -> RGB swap first."""

    def __init__(self, mean: Any = 0.0, std: Any = 1.0, data_format: str = "CHW", to_rgb: bool = False,
                 keys: Any = None) -> None:
        if data_format not in ("CHW", "HWC"):
            raise ConfigError(f"Normalize data_format={data_format!r} must be 'CHW' or 'HWC'")
        self.axis = 0 if data_format == "CHW" else 2
        shape = (-1, 1, 1) if self.axis == 0 else (1, 1, -1)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(shape)
        self.std = np.asarray(std, dtype=np.float32).reshape(shape)
        self.to_rgb, self.data_format = bool(to_rgb), data_format

    def __call__(self, img: Img) -> np.ndarray:
        img = np.asarray(img).astype(np.float32)
        if img.ndim != 3 or self.mean.size not in (1, img.shape[self.axis]):
            raise ConfigError(f"Normalize (data_format {self.data_format!r}) got an image of shape {tuple(img.shape)}; "
                              "put it after ToTensor, or set data_format: 'HWC'")
        if self.to_rgb:
            img = np.flip(img, axis=self.axis)
        return (img - self.mean) / self.std


class Compose:
    """Apply ops in order; ``outputs_chw`` tells the dataset whether a ToCHWImage ran."""

    def __init__(self, ops: Optional[List[Callable[[Any], Any]]] = None) -> None:
        self.ops = list(ops or [])
        self.outputs_chw = any(getattr(op, "to_chw", False) for op in self.ops)

    def __call__(self, img: Img) -> Img:
        for op in self.ops:
            img = op(img)
        return img

    def chw(self, img: Img) -> np.ndarray:
        """The ops, then HWC -> CHW float32 unless a ToCHWImage ran (PaddleClas transposes in the
        dataset): the one form the datasets, tools/infer.py and deploy feed the model."""
        out = np.asarray(self(img))
        if out.ndim == 2:
            out = out[:, :, None]
        if not self.outputs_chw:
            out = out.transpose((2, 0, 1))
        return np.ascontiguousarray(out, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Compose({', '.join(type(op).__name__ for op in self.ops)})"


def build_transforms(ops_cfg: Union[None, List[Dict[str, Any]], Compose], where: str) -> Compose:
    """Build ``[{OpName: {param: value}}, ...]`` (PaddleClas form); errors name ``where[i]``."""
    if isinstance(ops_cfg, Compose):
        return ops_cfg
    if ops_cfg is None:
        return Compose([])
    if not isinstance(ops_cfg, list):
        raise ConfigError(f"{where} must be a list of single-key mappings like '- ResizeImage: {{size: [128, 256]}}', "
                          f"got {type(ops_cfg).__name__}")
    return Compose([TRANSFORMS.build(item, f"{where}[{i}]") for i, item in enumerate(ops_cfg)])
