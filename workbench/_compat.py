"""Import guard for a torchvision whose compiled ops do not match the installed torch.

timm and segmentation_models_pytorch import torchvision. On a CPU-only machine the package
registry offers only a CUDA build of torchvision; its C extension cannot load against the CPU
torch wheel, so ``torchvision::nms`` is never registered and ``import torchvision`` dies with
``RuntimeError: operator torchvision::nms does not exist`` while registering a fake kernel for it.
We never call torchvision's detection ops, so when (and only when) that exact error happens we
declare the op's schema ourselves and import torchvision again. With a matching install (a normal
GPU setup) the first import succeeds and this module does nothing.
"""

from __future__ import annotations

import sys

import torch

_LIB = None  # keeps the fallback torch.library.Library alive for the process


def import_torchvision_safely() -> None:
    global _LIB
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIB = torch.library.Library("torchvision", "DEF")
    # The two ops torchvision/_meta_registrations.py registers fakes for by name.
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


import_torchvision_safely()
