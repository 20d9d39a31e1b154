#!/usr/bin/env python3
"""Predict car-part masks for a folder of images.

    python3 inference.py --input path/to/test_images --output path/to/predictions

See ``python3 inference.py --help`` and :mod:`workbench.inference.cli` for flags and policies.
"""

import os
import sys

# Set before torch is imported: OpenMP threads that spin while waiting make a model 10x slower when
# the CPU is shared (another job, our own decode threads); inference never downloads anything.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.inference.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
