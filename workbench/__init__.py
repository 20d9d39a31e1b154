"""carparts workbench: car-part semantic segmentation (teachers, distillation, inference, analysis)."""

import os

# Torch's OpenMP threads spin while waiting; on a small CPU shared with other work (decode threads,
# a second job) that spinning made training ~3x and inference ~6x slower here. Sleep instead.
# Takes effect only if workbench is imported before torch, as all our entry points do.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# OpenCV reads its decoder pixel limit once, when it is loaded (default 2^30 pixels: a 20 kB .hdr file
# could then allocate 12 GB). Ours (workbench.core.limits) is set before anything imports cv2.
from .core.limits import MAX_IMAGE_PIXELS  # noqa: E402

os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

from . import _compat  # noqa: F401  (must run before anything imports timm / smp / torchvision)

__version__ = "0.1.0"
