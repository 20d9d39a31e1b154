"""Predictor: a carparts model file turned into a function from RGB images to full-size masks.

Everything comes from the model file's metadata: architecture, class schema (values written to the
mask, flip permutation for TTA), input size, normalisation, TTA settings, exclusive part groups and
cleanup thresholds.
The steps are separate methods so callers can run them on different threads and time them:

    small = predictor.prepare(rgb)                  # squash to the input size (uint8, CPU)
    probs = predictor.forward(np.stack(smalls))     # (N, C, h, w) float32 probabilities, TTA averaged
    p = predictor.cleanup(probs[i])                 # exclusive parts + component cleanup at the model resolution
    labels = predictor.to_labels(p, (H, W))         # upsample to full size + argmax, in strips
    mask = predictor.to_values(labels)              # uint8 pixel values of the schema

or simply ``predictor.predict(rgb)``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..core.runtime import resolve_device
from ..core.schema import ClassSchema
from ..data.imageio import read_image
from ..data.preprocess import to_tensor
from ..data.resize import resize_rgb
from ..exceptions import ModelFileError
from ..models.fusion import fuse_conv_bn
from ..models.modelfile import default_postprocessing, load_model
from . import tta as _tta  # _tta.flip_tta: the one flip-TTA forward
from .postprocess import exclusive_by_index, min_area_by_index, postprocess, probs_to_labels

TTA_DEFAULTS = default_postprocessing()["tta"]
SIZE_MULTIPLE = 32  # smp encoders downsample 5 times: extra TTA scales are rounded to a multiple of 32


class Predictor:
    """Runs a carparts model file on images.

    Args:
        weights: path of the model file (safetensors + "carparts" metadata).
        device: torch device (see :func:`resolve_device` for ``auto``).
        tta: use the TTA of the metadata (horizontal flip on by default, extra ``scales``); False
            for a single plain forward pass.
        scales: override the metadata's TTA scales (e.g. ``[1.0, 1.25]``); ignored if ``tta`` is False.
        cleanup: apply the post-processing of the metadata: its exclusive part groups and its
            connected-component cleanup (where enabled there).

    Raises :class:`ModelFileError` with a readable message for missing, corrupt or inconsistent files.
    """

    def __init__(self, weights: str | Path, device: str | torch.device = "cpu", tta: bool = True,
                 scales: list[float] | None = None, cleanup: bool = True):
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        model, meta = load_model(weights, self.device)
        self.model = model.to(memory_format=torch.channels_last)
        self.meta = meta
        try:
            self.schema = ClassSchema.from_dict(meta["schema"])
            self.input_size = tuple(int(v) for v in meta["input_size"])
            if len(self.input_size) != 2 or min(self.input_size) < 1:
                raise ValueError(f"input_size must be [height, width], got {meta['input_size']!r}")
            self.normalization = {"mean": [float(v) for v in meta["normalization"]["mean"]],
                                  "std": [float(v) for v in meta["normalization"]["std"]]}
            if meta.get("resize", "squash") != "squash":
                raise ValueError(f"resize mode {meta['resize']!r} is not supported (only 'squash')")
            tta_meta = {**TTA_DEFAULTS, **(meta.get("tta") or {})}
            self.hflip = bool(tta) and bool(tta_meta["hflip"])
            self.scales = [float(s) for s in (scales if scales is not None else tta_meta["scales"])] if tta else [1.0]
            if not self.scales or min(self.scales) <= 0:
                raise ValueError(f"TTA scales must be positive, got {self.scales}")
            self.min_area = min_area_by_index(meta.get("cleanup"), self.schema) if cleanup else {}
            self.exclusive = exclusive_by_index(meta.get("exclusive"), self.schema) if cleanup else []
        except (KeyError, TypeError, ValueError) as err:
            raise ModelFileError(f"{weights}: invalid model metadata: {err!r}") from err
        self.flip_perm = self.schema.flip_permutation  # from the file's schema, never from constants
        # BatchNorms folded into their convolutions: the same output, about a quarter faster on CPU
        probe = torch.rand((1, 3, *self.input_size), generator=torch.Generator().manual_seed(0))
        self.model = fuse_conv_bn(self.model, probe.to(self.device).contiguous(memory_format=torch.channels_last))
        self._lut = np.zeros(256, np.uint8)
        self._lut[: self.schema.num_classes] = self.schema.index_to_value

    @property
    def num_classes(self) -> int:
        return self.schema.num_classes

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> the model's input size, squashed as in training."""
        return resize_rgb(image, self.input_size)

    @torch.inference_mode()
    def forward(self, images: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 prepared images -> (N, C, h, w) float32 probabilities on the CPU,
        averaged over the TTA views (flip with the schema's permutation, scales)."""
        x = to_tensor(images, self.normalization, device=self.device)
        size = tuple(x.shape[-2:])
        total = None
        for s in self.scales:
            xs = x
            if s != 1.0:
                scaled = [max(SIZE_MULTIPLE, round(n * s / SIZE_MULTIPLE) * SIZE_MULTIPLE) for n in size]
                xs = F.interpolate(x, size=scaled, mode="bilinear", align_corners=False, antialias=s < 1)
                xs = xs.contiguous(memory_format=torch.channels_last)
            p = _tta.flip_tta(self.model, xs, self.flip_perm if self.hflip else None)
            if tuple(p.shape[-2:]) != size:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            total = p if total is None else total.add_(p)
        return total.div_(len(self.scales)).cpu().numpy()

    def cleanup(self, probs: np.ndarray) -> np.ndarray:
        """The model file's post-processing of (C, h, w) probabilities at the model's output
        resolution, where it was chosen on OOF maps: first its exclusive part groups (a group split
        by the argmax goes to its larger member), then the connected-component cleanup (the classes
        of dropped components lose their probability, so the argmax goes to the runner-up).
        Returns ``probs`` unchanged when neither applies."""
        return postprocess(probs, self.exclusive, self.min_area)

    def to_labels(self, probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(C, h, w) probabilities -> (H, W) uint8 class indices at the full image size."""
        return probs_to_labels(probs, size)

    def to_values(self, labels: np.ndarray) -> np.ndarray:
        """Class indices -> the schema's pixel values (0, 32, 64, ... for the default schema)."""
        return cv2.LUT(labels, self._lut)

    def predict_labels(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """One (H, W, 3) uint8 RGB image -> (H, W) uint8 class indices (``size`` overrides the
        output size, e.g. for an image decoded at reduced size)."""
        probs = self.cleanup(self.forward(self.prepare(image)[None])[0])
        return self.to_labels(probs, size or image.shape[:2])

    def predict(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """One (H, W, 3) uint8 RGB image -> (H, W) uint8 mask of schema values (``size`` as in
        :meth:`predict_labels`)."""
        return self.to_values(self.predict_labels(image, size))

    def predict_file(self, path: str | Path) -> np.ndarray:
        """Mask of an image file, at its displayed size (EXIF orientation applied)."""
        decoded = read_image(path, self.input_size)
        return self.predict(decoded.image, decoded.size)
