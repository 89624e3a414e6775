"""Which library multiplies the features in the exact kNN: chosen by measurement, once per process.

Speeds differ widely (numpy's OpenBLAS runs its generic ``Prescott`` kernel on processors it
does not know: 61 GFLOP/s against 245), so ``Cluster.gemm: auto`` times every backend that
passes a float64 check (which also guards a user's ``OPENBLAS_CORETYPE``) and logs the fastest.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
from threadpoolctl import threadpool_info

from ppise.errors import ConfigError
from ppise.utils.logger import logger

GEMM_CHOICES = ("auto", "numpy", "paddle", "scipy", "torch")
# The timed product, rows x dim @ dim x rows (4.3 GFLOP): big enough for full-speed kernels.
PROBE_ROWS = 1024
PROBE_DIM = 2048
PROBE_REPEATS = 2
# Relative error (max |err| / max |ref|) a float32 product may show against float64.
MAX_REL_ERROR = 1e-4

Gemm = Callable[[np.ndarray, np.ndarray, np.ndarray], None]  # gemm(a, b, out): out[...] = a @ b.T


@dataclass
class GemmBackend:
    name: str
    gemm: Gemm
    gflops: float = 0.0  # measured rate; 0 when not measured (forced choice)
    measured: Dict[str, float] = field(default_factory=dict)  # every candidate's rate in that measurement
    kernel: str = ""

    def describe(self) -> str:
        rate = f"{self.gflops:.0f} GFLOP/s" if self.gflops else "not measured"
        others = ", ".join(f"{k} {v:.0f}" for k, v in self.measured.items())
        kernel = self.kernel if self.name == "numpy" else f"{self.kernel}; {blas_kernel('numpy')}"
        return f"{self.name} ({rate}{'; measured ' + others if others else ''}; {kernel})"


def _numpy_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    np.matmul(a, b.T, out=out)


def _scipy_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    from scipy.linalg.blas import sgemm

    # Row-major out (m x n) is column-major out.T; a.T and b.T are column-major views (no copy).
    res = sgemm(1.0, b.T, a.T, trans_a=1, c=out.T, overwrite_c=1)
    if not np.shares_memory(res, out):  # pragma: no cover - f2py copied c after all
        out[...] = res.T


def _paddle_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    import paddle

    place = paddle.CPUPlace()
    with paddle.no_grad():
        res = paddle.matmul(paddle.to_tensor(a, place=place), paddle.to_tensor(b, place=place), transpose_y=True)
        out[...] = res.numpy()


def _torch_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    import torch

    torch.matmul(torch.from_numpy(a), torch.from_numpy(b).T, out=torch.from_numpy(out))


def _blas(lib: str) -> Optional[dict]:
    """threadpoolctl's record of the BLAS ``lib`` ("numpy" or "scipy") loaded."""
    if lib == "scipy":
        import scipy.linalg.blas  # noqa: F401 - loads scipy's BLAS so threadpoolctl lists it
    libs = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    own = [info for info in libs if lib in info.get("filepath", "")]
    if own:
        return own[0]
    return libs[0] if libs and lib == "numpy" else None


def blas_kernel(backend: str = "numpy") -> str:
    """The library behind ``backend``, e.g. ``numpy: openblas 0.3.21 Zen`` (OpenBLAS names the
    kernel it picked for this processor; ``Prescott`` is its generic fallback)."""
    if backend == "paddle":
        mkl = False
        with contextlib.suppress(Exception):
            import paddle

            mklml = os.path.join(os.path.dirname(paddle.__file__), "libs", "libmklml_intel.so")
            mkl = paddle.is_compiled_with_mkldnn() or os.path.exists(mklml)
        return "paddle: MKL" if mkl else "paddle: own BLAS"
    if backend not in ("numpy", "scipy"):
        return backend
    info = _blas(backend) or {"internal_api": "unknown BLAS"}
    parts = (info.get("internal_api", "?"), info.get("version"), info.get("architecture"))
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    env = f" (OPENBLAS_CORETYPE={coretype})" if coretype else ""
    return f"{backend}: {' '.join(str(p) for p in parts if p)}{env}"


def available() -> Dict[str, Gemm]:
    """The backends importable in this process, in preference order for equal speed."""
    found: Dict[str, Gemm] = {"numpy": _numpy_gemm}
    with contextlib.suppress(Exception):  # scipy missing or without BLAS wrappers
        sci, num = _blas("scipy"), _blas("numpy")
        if sci is not None and (num is None or sci.get("filepath") != num.get("filepath")):
            found["scipy"] = _scipy_gemm
    for name, gemm in (("paddle", _paddle_gemm), ("torch", _torch_gemm)):
        with contextlib.suppress(Exception):  # not installed, or broken
            importlib.import_module(name)
            found[name] = gemm
    return found


def check_gemm(gemm: Gemm, seed: int = 0) -> float:
    """Relative error of ``gemm`` on a small product against float64 (odd sizes, two blocks' worth)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((67, 300), dtype=np.float32)
    b = rng.standard_normal((130, 300), dtype=np.float32)
    out = np.empty((67, 130), dtype=np.float32)
    gemm(a, b, out)
    ref = a.astype(np.float64) @ b.astype(np.float64).T
    err = float(np.abs(out - ref).max() / np.abs(ref).max())
    return err if np.isfinite(err) else float("inf")


def measure(
    backends: Dict[str, Gemm], rows: int = PROBE_ROWS, dim: int = PROBE_DIM,
    repeats: int = PROBE_REPEATS,
) -> Dict[str, float]:
    """GFLOP/s of each backend on ``rows x dim @ dim x rows``, best of ``repeats`` interleaved
    rounds (so other processes' load hits all); call it inside ``gemm_knn.all_cores()``."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((rows, dim), dtype=np.float32)
    b = rng.standard_normal((rows, dim), dtype=np.float32)
    out = np.empty((rows, rows), dtype=np.float32)
    flops = 2.0 * rows * rows * dim
    best = {name: 0.0 for name in backends}
    for gemm in backends.values():  # warm-up: thread pools, first-call initialisation
        gemm(a[:64], b[:64], out[:64, :64])
    racing = dict(backends)
    for round_ in range(repeats):
        for name, gemm in racing.items():
            t0 = time.perf_counter()
            gemm(a, b, out)
            best[name] = max(best[name], flops / max(time.perf_counter() - t0, 1e-9) / 1e9)
        if round_ == 0:  # at under half the leader's rate a candidate cannot win: stop timing it
            top = max(best.values())
            racing = {name: gemm for name, gemm in racing.items() if best[name] >= 0.5 * top}
    return best


_chosen: Dict[str, GemmBackend] = {}
_preference: List[str] = ["auto"]


def check_choice(name: str, where: str = "Cluster.gemm") -> str:
    if not isinstance(name, str) or name.lower() not in GEMM_CHOICES:
        raise ConfigError(f"{where}: unknown value {name!r}; expected one of {GEMM_CHOICES}")
    return name.lower()


@contextlib.contextmanager
def preferred(name: str) -> Iterator[None]:
    """Inside the block, exact kNN searches use backend ``name`` (``auto``: the measured fastest)."""
    _preference.append(check_choice(name))
    try:
        yield
    finally:
        _preference.pop()


def select(name: Optional[str] = None) -> GemmBackend:
    """The backend for ``name`` (default: the innermost ``preferred``), measured once per process."""
    name = check_choice(name or _preference[-1])
    if name in _chosen:
        return _chosen[name]
    found = available()
    if name != "auto":
        if name not in found:
            raise ConfigError(f"Cluster.gemm: {name!r} is not available in this environment (have {sorted(found)})")
        err = check_gemm(found[name])
        if err > MAX_REL_ERROR:
            raise ConfigError(
                f"Cluster.gemm={name}: its matrix products are wrong in this environment (relative error {err:.2e} "
                f"against float64; {blas_kernel(name)}); use Cluster.gemm: auto, which skips it"
            )
        backend = GemmBackend(name, found[name], kernel=blas_kernel(name))
        logger.info(f"exact kNN matrix products: {backend.describe()} (forced by Cluster.gemm)")
        _chosen[name] = backend
        return backend
    good = {}
    for cand, gemm in found.items():
        try:
            err = check_gemm(gemm)
        except Exception as exc:  # noqa: BLE001 - a broken optional library must not stop clustering
            logger.warning(f"exact kNN: matrix-product backend {cand} failed its check ({exc!r}); not used")
            continue
        if err > MAX_REL_ERROR:
            logger.warning(f"exact kNN: backend {cand} computes wrong products (relative error {err:.2e}); not used")
            continue
        good[cand] = gemm
    good = good or {"numpy": _numpy_gemm}  # even numpy failed: let it raise where it is used
    from ppise.cluster.gemm_knn import all_cores

    t0 = time.perf_counter()
    with all_cores():
        rates = measure(good) if len(good) > 1 else dict.fromkeys(good, 0.0)
    best = max(rates, key=rates.get)
    backend = GemmBackend(best, good[best], gflops=rates[best], measured=rates, kernel=blas_kernel(best))
    logger.info(
        f"exact kNN matrix products: {backend.describe()}, chosen in {time.perf_counter() - t0:.2f} s "
        "(Cluster.gemm: auto; set numpy or paddle to force one)"
    )
    _chosen[name] = backend
    return backend


def reset() -> None:
    """Forget the measured choice (tests; a process whose thread settings changed)."""
    _chosen.clear()
