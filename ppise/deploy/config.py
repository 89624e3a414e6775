"""Deploy config (PaddleClas ``deploy/configs/inference_rec.yaml`` style), checked by the training
config's ``apply_override`` / ``check_section``: an unknown key given with ``-o`` is an error, one
in the YAML file only a warning (PaddleClas deploy files carry keys ppise does not use).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from ..config import AT_LEAST_1, apply_override, check_section, load_yaml
from ..registry import close_match
from ..errors import ConfigError

_NONE = type(None)
# section -> key -> (allowed types, default[, check]), as ppise.config's schemas
SCHEMA: Dict[str, Dict[str, tuple]] = {
    "Global": {
        "infer_imgs": ((str, _NONE), None),
        "inference_model_dir": ((str, _NONE), "./inference/ise_demo"),
        "rec_inference_model_dir": ((str, _NONE), None),  # PaddleClas's name, an alias
        "batch_size": ((int,), 32, AT_LEAST_1),
        "use_gpu": ((bool,), False),
        "gpu_mem": ((int,), 8000, AT_LEAST_1),
        "gpu_id": ((int,), 0),
        "enable_mkldnn": ((bool,), True),
        "cpu_num_threads": ((int,), 2, AT_LEAST_1),
        "use_tensorrt": ((bool,), False),
        "use_fp16": ((bool,), False),
        "ir_optim": ((bool,), True),
        "output_dir": ((str,), "./output/deploy"),
        # the share of unusable images skipped; above it: error
        "max_bad_image_ratio": ((float, int), 1.0, (lambda v: 0 <= v <= 1,
                                                     "in [0, 1] (the share of unusable images skipped)")),
    },
    "RecPreProcess": {
        "transform_ops": ((list, _NONE), None),
    },
    "RecPostProcess": {
        "feature_normalize": ((bool,), True),
    },
    "IndexProcess": {
        "index_dir": ((str,), "./output/deploy/gallery_index"),
        "image_root": ((str, _NONE), None),
        "data_file": ((str, _NONE), None),
        "delimiter": ((str, _NONE), None),
        "naming": ((str,), "market", ("market", "none")),
        "index_method": ((str,), "Flat", ("Flat", "IVF", "HNSW")),
        "nlist": ((int,), 100, AT_LEAST_1),
        "nprobe": ((int,), 10, AT_LEAST_1),
        "hnsw_m": ((int,), 32, AT_LEAST_1),
        "ef_construction": ((int,), 40, AT_LEAST_1),
        "ef_search": ((int,), 64, AT_LEAST_1),
        "return_k": ((int,), 10, AT_LEAST_1),
        "score_thres": ((float, int, _NONE), None),
    },
}
def validate(cfg: Dict[str, Any], warn=None) -> Dict[str, Any]:
    """Fill defaults, check types and values (``ppise.config.check_section``); returns the same dict."""
    for section in list(cfg):
        if section not in SCHEMA and warn:
            warn(f"deploy config section '{section}' is not used by ppise{close_match(section, SCHEMA)}")
    for section, keys in SCHEMA.items():
        node = cfg.get(section)
        if node is None:
            node = cfg[section] = {}
        if not isinstance(node, dict):
            raise ConfigError(f"deploy config section {section} must be a mapping, got {node!r}")
        check_section(node, keys, section, warn, strict=False)
    glob = cfg["Global"]
    if glob.get("rec_inference_model_dir"):  # PaddleClas configs name the model dir this way
        glob["inference_model_dir"] = glob["rec_inference_model_dir"]
    if not glob.get("inference_model_dir"):
        raise ConfigError("Global.inference_model_dir must name the folder written by tools/export_model.py")
    return cfg


def load_deploy_config(path: str, overrides: Optional[Sequence[str]] = None, warn=None) -> Dict[str, Any]:
    """Read ``path``, apply ``-o Section.key=value`` overrides in order, validate."""
    cfg = load_yaml(path)
    for text in overrides or []:
        apply_override(cfg, text, sections=tuple(SCHEMA), schemas=SCHEMA)
    return validate(cfg, warn=warn)

