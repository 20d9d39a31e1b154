"""``python -m workbench.coco``: the COCO import command (the importer is :mod:`workbench.data.coco`)."""

import sys

from .data.coco import main

if __name__ == "__main__":
    sys.exit(main())
