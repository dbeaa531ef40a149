"""MMSegmentation 1.x backend: models built from mmseg's own config files, trained in segbench's protocol.

The config is read from the files shipped inside the mmseg package (``mmseg/.mim/configs``), or
from a folder the user trusts by name. An mmseg config is Python that mmengine executes, and a
model folder (``best/model.json``, a DVC-pulled ``models/<m>/fold<k>/seed<s>``) names its config: so a
config outside the package is read only from a folder listed in ``$SEGBENCH_TRUSTED_MMSEG_CONFIGS``
(folders separated by ``os.pathsep``); any other path, ``..`` escapes and links out included, is
refused before anything runs. segbench then:

* sets ``num_classes`` of the decode head, drops the auxiliary head (segbench's one protocol
  trains every model with the same loss on the final logits) and the data preprocessor (segbench
  normalises inputs itself);
* removes ``init_cfg`` / ``pretrained`` entries that point to URLs (nothing is downloaded);
  ``encoder_weights`` loads a local backbone checkpoint instead;
* converts SyncBN to BN (``mmengine.model.revert_sync_batchnorm``) so it runs on one CPU/GPU;
* calls the model with ``mode='tensor'`` (``EncoderDecoder._forward``): decode-head logits at
  1/4 or 1/8 of the input, resized bilinearly to the input size. Heads that return several maps in
  training mode (DANet's PAM/CAM branches, PIDNet's P/I/D branches, DDRNet's auxiliary map) are
  trained on the map they predict with (:data:`MAIN_OUTPUT`): one loss on the final logits for every
  model is the protocol; their extra supervision is dropped like ``auxiliary_head``. (Under DDP the
  unused branches need ``find_unused_parameters``; train these on one device.)

Compiled mmcv ops are absent with mmcv-lite (see segbench/_compat.py): a model that calls one
raises ``CompiledOpUnavailable`` naming the op.
"""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from typing import Any

from .._compat import ensure_mmcv_ext, import_torchvision
from .base import SegmentationModel, load_encoder_weights

__all__ = ["build", "config_root"]


def _mmseg():
    import_torchvision()
    ensure_mmcv_ext()
    import mmseg
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    return mmseg


def config_root() -> Path:
    """Folder of the config files shipped inside the installed mmseg package."""
    return Path(_mmseg().__file__).parent / ".mim" / "configs"


#: folders (``os.pathsep``-separated) whose mmseg config files the user trusts to run
TRUST_ENV = "SEGBENCH_TRUSTED_MMSEG_CONFIGS"


def trusted_config(config: str | os.PathLike) -> Path:
    """The config file ``config`` names, if it may be executed: inside mmseg's shipped configs, or
    inside a folder listed in ``$SEGBENCH_TRUSTED_MMSEG_CONFIGS``. Links are resolved first.

    Raises:
        PermissionError: the file is elsewhere (names it and the variable that trusts its folder).
    """
    path = Path(config)
    path = (path if path.is_absolute() else config_root() / path).resolve()
    roots = [config_root().resolve()] + [
        Path(d).expanduser().resolve() for d in os.environ.get(TRUST_ENV, "").split(os.pathsep) if d
    ]
    if any(path.is_relative_to(r) for r in roots):
        return path
    raise PermissionError(
        f"mmseg config '{config}' resolves to {path}, outside mmseg's shipped configs ({roots[0]}); an mmseg "
        f"config is Python that runs when it is read, so segbench reads one from elsewhere only if you trust "
        f"its folder: export {TRUST_ENV}={path.parent}"
    )


def _strip_urls(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "init_cfg" and "Pretrained" in str(v):
                continue
            if k == "pretrained" and isinstance(v, str):
                out[k] = None
                continue
            out[k] = _strip_urls(v)
        return out
    if isinstance(node, list):
        return [_strip_urls(v) for v in node]
    return node


#: decode heads that return several logit maps in training mode (deep supervision by design) -> the index
#: of the one they return at inference. segbench trains that one, as it drops ``auxiliary_head``.
MAIN_OUTPUT = {"DAHead": 0, "PIDHead": 1, "DDRHead": 0}


def _tensor_forward(net, x):
    out = net(x, mode="tensor")
    if isinstance(out, (tuple, list)):
        out = out[MAIN_OUTPUT.get(type(net.decode_head).__name__, 0)]
    return out


def build(
    num_classes: int, config: str, encoder_weights: str | None = None, **kwargs: Any
) -> SegmentationModel:
    """Build an mmseg ``EncoderDecoder`` from one of its config files.

    Args:
        config: path relative to mmseg's shipped configs
            (``segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py``)
            or an absolute path to a config file in a folder listed in
            ``$SEGBENCH_TRUSTED_MMSEG_CONFIGS`` (an mmseg config is code that runs when read).
        encoder_weights: None, or a local backbone checkpoint (``.pth``/``.safetensors``).
        **kwargs: ignored keys are rejected (ValueError) so typos do not pass silently.

    Raises:
        ValueError: the config file does not exist (names close matches) or is not an EncoderDecoder.
        PermissionError: the config is outside mmseg's configs and every trusted folder
            (:func:`trusted_config`); nothing of it was run.
    """
    if kwargs:
        raise ValueError(f"unknown mmseg model option(s) {sorted(kwargs)}; allowed: config, encoder_weights")
    _mmseg()
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmseg.registry import MODELS

    path = trusted_config(config)
    if not path.is_file():
        family = Path(config).parts[0] if Path(config).parts else ""
        near = (
            sorted(p.relative_to(config_root()).as_posix() for p in (config_root() / family).glob("*.py"))
            if family
            else []
        )
        hint = (
            f"; configs in '{family}': {', '.join(near[:12])}"
            if near
            else f"; families: {', '.join(sorted(os.listdir(config_root())))}"
        )
        raise ValueError(f"mmseg config '{config}' not found under {config_root()}{hint}")
    try:
        cfg = Config.fromfile(str(path))  # runs the config's custom_imports
    except ImportError as err:
        missing = getattr(err, "name", None) or next(
            (p for p in ("mmdet", "mmpretrain") if p in str(err)), "a package"
        )
        raise ValueError(
            f"mmseg config '{config}' needs components from another package, and {missing.split('.')[0]} is "
            f"not installed; install it (pip install -c constraints.txt {missing.split('.')[0]}) or pick a "
            "config from `segbench models --library mmseg`"
        ) from err
    model_cfg = _strip_urls(
        copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    )
    if model_cfg.get("type") not in ("EncoderDecoder", "CascadeEncoderDecoder"):
        raise ValueError(
            f"mmseg config '{config}' builds a {model_cfg.get('type')}; segbench supports EncoderDecoder "
            "models"
        )
    model_cfg.pop("data_preprocessor", None)
    model_cfg.pop("auxiliary_head", None)
    heads = (
        model_cfg["decode_head"] if isinstance(model_cfg["decode_head"], list) else [model_cfg["decode_head"]]
    )
    if any(h.get("type") == "PointHead" for h in heads):
        raise ValueError(
            f"mmseg config '{config}' is PointRend: its point head trains on sampled points through its own "
            "loss, which segbench's one protocol (one loss on the final logits) does not support; "
            "`segbench models --library mmseg` lists the configs that work"
        )
    for head in heads:
        head["num_classes"] = num_classes
    imports = (cfg.get("custom_imports") or {}).get("imports") or []
    for module in [imports] if isinstance(imports, str) else imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            pkg = module.split(".")[0]
            raise ValueError(
                f"mmseg config '{config}' needs components from '{module}', and {pkg} is not installed; "
                f"install it (pip install -c constraints.txt {pkg}) or pick a config from "
                "`segbench models --library mmseg`"
            ) from err
    try:
        net = revert_sync_batchnorm(MODELS.build(model_cfg))
    except (TypeError, KeyError) as err:
        raise ValueError(
            f"mmseg could not build '{config}' ({type(err).__name__}: {err}). Configs whose heads or "
            "backbones "
            "live in other OpenMMLab packages (MaskFormer, Mask2Former and K-Net need mmdet; PoolFormer "
            "and ConvNeXt need mmpretrain) do not build without them; `segbench models --library mmseg` "
            "lists the configs that build here"
        ) from err
    if encoder_weights is not None:
        load_encoder_weights(net.backbone, encoder_weights)
    return SegmentationModel(net, net.backbone, "mmseg", forward_fn=_tensor_forward)
