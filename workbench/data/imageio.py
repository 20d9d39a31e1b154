"""The one place where image and mask files are read and masks written, for training, inference and
analysis alike: :func:`read_image` (any photo -> RGB uint8), :func:`read_mask` (a single-channel 8-bit
mask of class values, strict), :func:`write_mask`, and the file types they are looked up by
(:data:`IMAGE_EXTS`, :data:`MASK_EXTS`, :func:`files_by_stem`).

Photos are decoded with OpenCV (same JPEG decoder, same conversions wherever they are read), which
fixes the policy for odd files:

- **EXIF orientation is applied** (OpenCV does so by default for JPEG, PNG, WebP and TIFF): the image
  and therefore the output mask have the size of the picture *as displayed*, e.g. a phone photo
  stored as 4000x3000 with "rotate 90" metadata gives a 3000x4000 (width x height) mask.
- grayscale is replicated to three channels, an alpha channel is dropped (not composited),
  16-bit samples are scaled to 8 bits, CMYK is converted to RGB, palettes are expanded.
- Large JPEGs are decoded at 1/2, 1/4 or 1/8 size in the DCT domain (``IMREAD_REDUCED_COLOR_*``)
  when the model only needs a much smaller picture (see :func:`jpeg_reduction`); the full size is
  still reported, so the mask is written at the original resolution.

Files OpenCV cannot decode (other formats, CMYK TIFFs, ...) go through Pillow; a file neither can
decode raises :class:`ImageReadError` with the reason (empty file, truncated data, not an image).

Nothing is decoded before its size is known (:mod:`workbench.core.limits`): a file larger than
:data:`MAX_FILE_BYTES` is refused before it is read, and an image or mask whose header announces more
than :data:`MAX_IMAGE_PIXELS` before it is decoded. The header comes from Pillow, or for the two
formats only OpenCV decodes (Radiance ``.hdr``, ``.pfm``) from our own parser; a file with no header
we can read is not decoded at all. OpenCV's own limit (``OPENCV_IO_MAX_IMAGE_PIXELS``) is set to the
same value when :mod:`workbench` is imported.

Masks are strict: a mask must decode to one channel of 8-bit values (a 3-channel or 16-bit file is an
error, not silently converted), so a dataset, a prediction folder and an analysis all read the same
pixels the same way.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.atomic import atomic_write
from ..core.limits import MAX_FILE_BYTES, MAX_IMAGE_PIXELS
from ..exceptions import ImageReadError

# Photo and mask file types, in order of preference when two files share a stem. inference.py tries
# every file of its input folder instead, and reports the ones that are not images.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
MASK_EXTS = (".png",)

JPEG_FORMATS = ("JPEG", "MPO")  # MPO: multi-picture JPEG from cameras; its first frame is a JPEG
PNG_END = b"IEND\xaeB`\x82"     # last 8 bytes of every complete PNG file
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
         (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"))
REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclass
class DecodedImage:
    image: np.ndarray       # (h, w, 3) uint8 RGB; smaller than ``size`` when ``reduction`` > 1
    size: tuple[int, int]   # (height, width) of the full image as displayed (EXIF orientation applied)
    reduction: int = 1      # the image was decoded at 1/reduction of its size (1, 2, 4 or 8)


def read_image(path: str | Path, min_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decode the image file at ``path`` into RGB uint8 (see the module docstring for the policy).

    ``min_size`` = (height, width) the caller will resize the picture to: a JPEG at least four times
    that size in both directions is decoded at reduced size, never below twice ``min_size``.
    Raises :class:`ImageReadError` (or :class:`OSError` if the file cannot be read at all).
    """
    return decode_image(read_file(path), min_size)


def read_file(path: str | Path) -> bytes:
    """The bytes of an image or mask file, refused (:class:`ImageReadError`) without reading it
    when it is larger than :data:`MAX_FILE_BYTES`."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageReadError(f"file too large ({size / 2**20:,.0f} MB; image files are limited to "
                             f"{MAX_FILE_BYTES / 2**20:,.0f} MB)")
    return path.read_bytes()


def check_pixels(width: int, height: int) -> None:
    """:class:`ImageReadError` if a ``width`` x ``height`` picture is above :data:`MAX_IMAGE_PIXELS`."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(f"image too large: {width}x{height} is {width * height / 1e6:,.0f} megapixels, "
                             f"the limit is {MAX_IMAGE_PIXELS / 1e6:,.0f} megapixels")


def decode_image(data: bytes, min_size: tuple[int, int] | None = None) -> DecodedImage:
    """:func:`read_image` on the bytes of a file."""
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    header = _read_header(data)
    if header is None:  # Pillow does not know the format; OpenCV may (HDR, PFM), once we know its size
        size = opencv_only_size(data)
        if size is not None:
            check_pixels(*size)
        image = _cv2_decode(data, cv2.IMREAD_COLOR) if size is not None else None
        if image is None:
            fmt = sniff_format(data)
            raise ImageReadError(f"corrupt or truncated {fmt} file (cannot be decoded)" if fmt
                                 else "not an image file (unrecognised format)")
        return DecodedImage(image, image.shape[:2], 1)

    fmt, (width, height), orientation = header
    check_pixels(width, height)
    reduction = 1
    if min_size is not None and fmt in JPEG_FORMATS:
        reduction = jpeg_reduction((height, width) if orientation < 5 else (width, height), min_size)

    image = None
    if not (fmt == "PNG" and not data.rstrip(b"\0").endswith(PNG_END)):  # let Pillow explain truncated PNGs
        image = _cv2_decode(data, REDUCED_FLAGS[reduction])
    if image is None:
        image = _pillow_decode(data, fmt, reduction)

    if reduction == 1:
        return DecodedImage(image, image.shape[:2], 1)
    # The DCT-scaled size is ceil(full / reduction); whether it is transposed tells the orientation.
    up = lambda n: -(-n // reduction)  # noqa: E731
    if image.shape[:2] == (up(height), up(width)):
        return DecodedImage(image, (height, width), reduction)
    if image.shape[:2] == (up(width), up(height)):
        return DecodedImage(image, (width, height), reduction)
    return decode_image(data, None)  # unexpected geometry: decode at full size and trust that


_RADIANCE_SIZE = re.compile(rb"([-+])([XY]) +(\d+) +([-+])([XY]) +(\d+)")


def opencv_only_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a Radiance HDR or PFM file (formats OpenCV decodes and
    Pillow does not), or None for anything else."""
    if data.startswith((b"#?RADIANCE", b"#?RGBE")):
        head = data[:65536]
        start = head.find(b"\n\n") + 2           # the header ends with an empty line ...
        line = head[start:head.find(b"\n", start)] if start > 1 else b""
        m = _RADIANCE_SIZE.fullmatch(line.strip())  # ... followed by e.g. "-Y 480 +X 640"
        if m is None or m.group(2) == m.group(5):
            raise ImageReadError("corrupt Radiance HDR header (no size line)")
        first, second = int(m.group(3)), int(m.group(6))
        return (second, first) if m.group(2) == b"Y" else (first, second)
    if data[:2] in (b"PF", b"Pf") and data[2:3].isspace():
        fields = data[2:256].split(maxsplit=2)
        if len(fields) < 2 or not (fields[0].isdigit() and fields[1].isdigit()):
            raise ImageReadError("corrupt PFM header (no size)")
        return int(fields[0]), int(fields[1])
    return None


def sniff_format(data: bytes) -> str | None:
    """The image format announced by the first bytes (for error messages about broken files)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for magic, fmt in MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def jpeg_reduction(size: tuple[int, int], min_size: tuple[int, int]) -> int:
    """Largest DCT scaling factor (1, 2, 4, 8) that keeps ``size`` at least twice ``min_size`` in both
    directions, so that the resize to the model input still averages >= 2x2 pixels: the model then
    sees virtually the same picture as after a full decode (on the DSMLR test images the mean
    absolute difference of the 256x256 inputs is below 0.5 grey level; without the factor 2 some
    images differ by up to 4 on average, through chroma and filter differences at edges)."""
    for r in (8, 4, 2):
        if size[0] // r >= 2 * min_size[0] and size[1] // r >= 2 * min_size[1]:
            return r
    return 1


def displayed_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image file as displayed (EXIF orientation applied), from its header
    only; None if the file is not a readable image."""
    try:
        header = _read_header(Path(path))
    except (ImageReadError, OSError):
        return None
    if header is None:
        return None
    _, (width, height), orientation = header
    return (height, width) if orientation >= 5 else (width, height)


def _read_header(source: bytes | Path) -> tuple[str, tuple[int, int], int] | None:
    """(format, (width, height) as stored, EXIF orientation 1..8) from the header of the file's
    bytes (or the file at a path), or None if Pillow does not recognise it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                try:
                    orientation = int(img.getexif().get(0x0112, 1))
                except Exception:  # malformed EXIF must not make the picture unreadable
                    orientation = 1
                return img.format or "", img.size, orientation if 1 <= orientation <= 8 else 1
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"image too large to decode safely ({err}; the limit is "
                             f"{MAX_IMAGE_PIXELS / 1e6:,.0f} megapixels)") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _cv2_decode(data: bytes, flags: int) -> np.ndarray | None:
    """OpenCV decode to RGB, or None if OpenCV cannot decode the data (it is strict: truncated -> None)."""
    image = _imdecode(data, flags)
    if image is None:
        return None
    if image.ndim == 2:  # IMREAD_COLOR always gives 3 channels; be safe anyway
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)


def _imdecode(data: bytes, flags: int) -> np.ndarray | None:
    """``cv2.imdecode`` of the bytes, None when OpenCV cannot decode them (or refuses their size)."""
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    return None if image is None or image.size == 0 else image


def _pillow_decode(data: bytes, fmt: str, reduction: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if reduction > 1:
                    img.draft("RGB", (-(-img.width // reduction), -(-img.height // reduction)))
                img.load()
                img = ImageOps.exif_transpose(img)
                return pil_to_rgb(img)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, ... on bad data
        reason = str(err) or type(err).__name__
        if "truncated" in reason:
            raise ImageReadError(f"truncated {fmt} file ({reason})") from err
        raise ImageReadError(f"corrupt or unsupported {fmt} data ({reason})") from err


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image of any mode as (H, W, 3) uint8 RGB (16-bit scaled down, alpha dropped)."""
    if img.mode.startswith("I;16"):
        a = np.asarray(img).astype(np.float32) / 257.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))
    return np.asarray(img.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """(H, W) uint8 class *values* of a mask file, as stored (no EXIF rotation, no conversion).

    Raises :class:`ImageReadError` with the reason (not the file name) for a file that does not
    decode, has several channels (masks are single-channel PNGs) or is not 8-bit, and for one above
    the size limits before decoding it."""
    data = read_file(path)
    header = _read_header(data) if data else None
    if header is None:
        raise ImageReadError("unreadable or not an image")
    check_pixels(*header[1])
    raw = _imdecode(data, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageReadError("unreadable or not an image")
    if raw.ndim != 2:
        raise ImageReadError(f"mask has {raw.shape[2]} channels, expected a single-channel PNG")
    if raw.dtype != np.uint8:
        raise ImageReadError(f"mask is {raw.dtype}, expected 8-bit")
    return raw


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write an (H, W) uint8 mask as a single-channel 8-bit PNG (Pillow mode "L"), atomically (an
    interrupted run never leaves half a PNG); the parent folder is created if needed."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) uint8, got {mask.dtype} {mask.shape}")
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        raise OSError("PNG encoding failed")
    atomic_write(path, buf.tobytes())


def files_by_stem(folder: str | Path | None, exts: tuple[str, ...]) -> dict[str, Path]:
    """stem -> file for the non-hidden files of ``folder`` whose extension (any case) is in ``exts``;
    when two files share a stem the earlier extension of ``exts`` wins. ``None`` -> {}."""
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."):
            prev = out.get(p.stem)
            if prev is None or exts.index(p.suffix.lower()) < exts.index(prev.suffix.lower()):
                out[p.stem] = p
    return out
