"""The two import workarounds segbench needs on a CPU-only PyPI install, kept in one place.

Both act **only when the normal import fails**, so a working install (a CUDA torch with a matching
torchvision, or a compiled mmcv) never runs this code.

1. torchvision. PyPI's only torchvision 0.28.0 wheel is a CUDA build; its ``_C`` extension needs
   ``libc10_cuda.so``, which the CPU torch wheel does not ship, so the extension fails to load.
   torchvision tolerates that, except that ``torchvision/_meta_registrations.py`` registers fake
   kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, and that raises
   ``RuntimeError: operator torchvision::nms does not exist`` (upstream: pytorch/vision#9085).
   :func:`import_torchvision` catches exactly that error, defines the two operator *schemas* (no
   kernels) with ``torch.library``, and imports again. The C++ ops (``torchvision.ops.nms``,
   ``torchvision.io`` codecs) then raise when called; segbench uses neither (images are read with
   PIL). Models, transforms and weights loading work. timm and segmentation-models-pytorch import
   torchvision, so they must be imported after this.

2. mmcv. MMSegmentation 1.2.2 imports ``mmcv.ops`` at module level, and each op module loads the
   compiled ``mmcv._ext``, which mmcv-lite (the pure-Python build; full mmcv compiles from source
   for over 12 minutes) does not have. :func:`ensure_mmcv_ext` installs a stand-in module
   ``mmcv._ext`` whose every attribute is a function raising :class:`CompiledOpUnavailable` with
   the op's name and the fix. Models that never call a compiled op (most of mmseg's) build and
   train; the few that do (psanet's psamask, deformable attention ...) fail with that message.
   Call it before importing ``mmseg``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import types

__all__ = ["import_torchvision", "ensure_mmcv_ext", "CompiledOpUnavailable", "torchvision_ops_stubbed"]

log = logging.getLogger(__name__)

_TORCHVISION_LIB = None  # keeps the torch.library.Library (and so the schemas) alive


def torchvision_ops_stubbed() -> bool:
    """True when :func:`import_torchvision` had to define torchvision's op schemas itself."""
    return _TORCHVISION_LIB is not None


def import_torchvision() -> types.ModuleType:
    """Import and return ``torchvision``, working around a CUDA wheel next to a CPU torch.

    Raises:
        ImportError: torchvision is not installed.
        RuntimeError: the import fails for any other reason than the known missing-operator one.
    """
    global _TORCHVISION_LIB
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
        first_error = err
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    # Schemas copied from torchvision/csrc/ops/nms.cpp (TORCH_LIBRARY_FRAGMENT(torchvision, m)).
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB = lib
    log.info(
        "torchvision's C++ extension does not load with this torch (%s); its ops are unavailable, "
        "models and transforms work (see segbench/_compat.py)",
        first_error,
    )
    return importlib.import_module("torchvision")


class CompiledOpUnavailable(RuntimeError):
    """Raised when a model calls a compiled mmcv op that mmcv-lite does not provide."""


class _MissingExtension(types.ModuleType):
    """Stand-in for ``mmcv._ext``: any attribute is a function that raises CompiledOpUnavailable."""

    __segbench_stub__ = True

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def _unavailable(*args, **kwargs):
            raise CompiledOpUnavailable(
                f"this model calls mmcv's compiled op '{name}', which mmcv-lite (the pure-Python mmcv "
                f"segbench installs) does not include. Choose a model that does not need it (see "
                f"'segbench models'), or install a compiled mmcv 2.1.x matching your torch and CUDA "
                f"(https://mmcv.readthedocs.io/en/latest/get_started/installation.html)."
            )

        _unavailable.__name__ = name
        return _unavailable


def ensure_mmcv_ext() -> bool:
    """Make ``import mmseg`` work without a compiled mmcv; returns True when the stand-in was installed.

    Does nothing when ``mmcv._ext`` imports (a compiled mmcv is installed).
    """
    existing = sys.modules.get("mmcv._ext")
    if existing is not None:
        return bool(getattr(existing, "__segbench_stub__", False))
    try:
        importlib.import_module("mmcv._ext")
        return False
    except ModuleNotFoundError as err:
        if err.name not in ("mmcv._ext", "mmcv"):
            raise
        if importlib.util.find_spec("mmcv") is None:
            raise ImportError(
                "mmcv is not installed: pip install -c constraints.txt mmcv-lite mmengine mmsegmentation"
            ) from err
    stub = _MissingExtension("mmcv._ext")
    # importlib.util.find_spec() (used by mmengine's lazy imports) needs a spec on modules in sys.modules
    stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None, origin="segbench stand-in")
    sys.modules["mmcv._ext"] = stub
    return True
