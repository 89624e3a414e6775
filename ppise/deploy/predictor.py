"""Paddle Inference predictor for an exported re-ID model: images in, L2-normalised features out.

Options follow PaddleClas's deploy ``Global`` keys.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import paddle
from paddle import inference

from ..errors import ConfigError
from ..utils.arrays import l2_normalize
from ..utils.logger import logger
from .model_info import find_model_files, read_info
from .preprocess import Preprocessor, select_ops

# the deploy config's Global keys the predictor takes, by their PaddleClas names
OPTION_KEYS = ("batch_size", "use_gpu", "gpu_mem", "gpu_id", "enable_mkldnn", "cpu_num_threads",
               "use_tensorrt", "use_fp16", "ir_optim")


def _process_mkldnn_flag() -> bool:
    try:
        return bool(paddle.get_flags(["FLAGS_use_mkldnn"])["FLAGS_use_mkldnn"])
    except (ValueError, KeyError):  # pragma: no cover - builds without oneDNN
        return False


class RecPredictor:
    """Wraps ``paddle.inference``; ``run`` takes a preprocessed batch, ``extract`` image paths."""

    def __init__(self, model_dir: str, batch_size: int = 32, use_gpu: bool = False, gpu_mem: int = 8000,
                 gpu_id: int = 0, enable_mkldnn: bool = True, cpu_num_threads: int = 2, use_tensorrt: bool = False,
                 use_fp16: bool = False, ir_optim: bool = True, transform_ops: Optional[List[Dict[str, Any]]] = None,
                 prefer_format: Optional[str] = None, key: str = "Global.inference_model_dir") -> None:
        self.info = read_info(model_dir) or {}
        model_info = self.info.get("Model") or {}
        self.format, self.model_file, self.params_file = find_model_files(
            model_dir, key, prefer_format or model_info.get("format"))
        self.model_dir = model_dir
        self.batch_size = int(batch_size)
        self.image_shape = model_info.get("image_shape")
        self.feature_dim = model_info.get("feature_dim")
        self.input_name = model_info.get("input_name", "x")
        self.preprocess = None  # transform_ops=[]: the caller feeds preprocessed arrays only
        if transform_ops != []:
            self.preprocess = Preprocessor(*select_ops(transform_ops, self.info, self.image_shape))
        self.predictor = self._create(use_gpu, gpu_mem, gpu_id, enable_mkldnn, cpu_num_threads, use_tensorrt,
                                      use_fp16, ir_optim)
        self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])

    @classmethod
    def from_config(cls, cfg: Dict[str, Any]) -> "RecPredictor":
        glob = cfg["Global"]
        return cls(glob["inference_model_dir"], transform_ops=cfg["RecPreProcess"]["transform_ops"],
                   **{k: glob[k] for k in OPTION_KEYS})

    def _create(self, use_gpu, gpu_mem, gpu_id, enable_mkldnn, threads, use_tensorrt, use_fp16,
                ir_optim):
        if use_gpu and not paddle.is_compiled_with_cuda():
            raise ConfigError("Global.use_gpu is True but this paddle build has no CUDA: install "
                              "paddlepaddle-gpu or set -o Global.use_gpu=False")
        if use_tensorrt and not use_gpu:
            raise ConfigError("Global.use_tensorrt needs Global.use_gpu=True")
        if use_fp16 and not use_gpu:
            raise ConfigError("Global.use_fp16 needs Global.use_gpu=True (FP16 inference is GPU-only here)")
        config = inference.Config(self.model_file, self.params_file)
        precision = inference.PrecisionType.Half if use_fp16 else inference.PrecisionType.Float32
        if use_gpu:
            config.enable_use_gpu(int(gpu_mem), int(gpu_id), precision if not use_tensorrt else
                                  inference.PrecisionType.Float32)
            if use_tensorrt:
                config.enable_tensorrt_engine(max_batch_size=self.batch_size,  # 1 GiB workspace
                                              precision_mode=precision, use_calib_mode=False)
                if self.image_shape:
                    name, shape = self.input_name, [self.batch_size, *self.image_shape]
                    config.set_trt_dynamic_shape_info({name: [1, *self.image_shape]}, {name: shape},
                                                      {name: shape})
        else:
            config.disable_gpu()
            if enable_mkldnn:
                config.set_mkldnn_cache_capacity(10)  # bounded cache of input shapes (PaddleClas does the same)
                config.enable_mkldnn()
            else:
                config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(int(threads))
        config.switch_ir_optim(bool(ir_optim))
        if self.format == "legacy":  # PIR models fail with it on Paddle 3.3.1 (Paddle issue #75496)
            config.enable_memory_optim()
        config.disable_glog_info()
        config.switch_use_feed_fetch_ops(False)
        # Paddle 3.3.1: with the process flag FLAGS_use_mkldnn on (ppise's dygraph CPU default), a
        # predictor created with oneDNN disabled still runs oneDNN kernels on a graph its passes did
        # not prepare for them and fails on PIR models; the flag only matters while creating.
        flip = not use_gpu and not enable_mkldnn and _process_mkldnn_flag()
        try:
            if flip:
                paddle.set_flags({"FLAGS_use_mkldnn": False})
            return inference.create_predictor(config)
        except Exception as err:  # noqa: BLE001 - paddle raises many types for a bad model file
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ConfigError(f"Paddle Inference cannot load {self.model_file} + {self.params_file}: "
                              f"{type(err).__name__}: {first}") from err
        finally:
            if flip:
                paddle.set_flags({"FLAGS_use_mkldnn": True})

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw (un-normalised) features of a preprocessed ``[N, C, H, W]`` batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.image_shape and list(batch.shape[1:]) != list(self.image_shape):
            raise ConfigError(f"preprocessed images have shape {list(batch.shape[1:])} but the model "
                              f"{self.model_dir} takes {self.image_shape} ([C, H, W]): check the resize op")
        self.input.reshape(list(batch.shape))
        self.input.copy_from_cpu(batch)
        self.predictor.run()
        return self.output.copy_to_cpu().reshape(batch.shape[0], -1).astype(np.float32, copy=False)

    def extract(self, paths: Sequence[str], normalize: bool = True, log_every: int = 20) -> np.ndarray:
        """Features of images on disk, ``batch_size`` at a time, L2-normalised by default."""
        if self.preprocess is None:
            raise ConfigError("this predictor was built without preprocessing (transform_ops=[])")
        feats = []
        steps = (len(paths) + self.batch_size - 1) // self.batch_size
        for step, start in enumerate(range(0, len(paths), self.batch_size), start=1):
            feats.append(self.run(self.preprocess(paths[start:start + self.batch_size])))
            if step % log_every == 0 or step == steps:
                logger.info(f"extract: batch {step}/{steps}")
        out = np.concatenate(feats) if feats else np.zeros((0, self.feature_dim or 0), np.float32)
        return l2_normalize(out) if normalize else out
