"""carparts workbench: car-part semantic segmentation (teachers, distillation, inference, analysis)."""

from . import _compat  # noqa: F401  (must run before anything imports timm / smp / torchvision)

__version__ = "0.1.0"
