"""What distillation adds to a training step: the channel-wise KD loss (forward + backward) against its
first, all-classes implementation, the augmentation of a sample's soft-label maps, and (with
``--soft-cache``) how many classes a teacher puts in a random training crop.

    python -m analysis.time_kd                                   # synthetic arrays, 1 thread
    python -m analysis.time_kd --soft-cache runs/<name>/cache/soft_<key>.npy

Synthetic inputs have the shapes of a campaign-2 student step (batch 8, 19 classes, 256² crops of
384² images); about half of the classes are present in each crop, as in the real soft labels.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from analysis._cli import POSITIVE, parser
from workbench.core.cli import fail_cleanly
from workbench.data.augment import build_train_transform
from workbench.training.losses import channel_kd_loss


def channel_kd_all_pairs(student_logits, teacher_probs, temperature, min_pixels=16.0):
    """The first implementation of :func:`channel_kd_loss`: spatial softmaxes over every (image, class)
    row, absent rows dropped at the end. The reference the row-selecting version must equal (tests) and
    the baseline it is timed against (here)."""
    teacher_probs = teacher_probs.float()
    valid = (teacher_probs.sum(1, keepdim=True) > 0.5).flatten(2)
    present = (teacher_probs.flatten(2) * valid).sum(-1) >= min_pixels
    log_t = torch.log(teacher_probs.clamp_min(1e-12)).flatten(2) / temperature
    log_s = F.log_softmax(student_logits.float(), 1).flatten(2) / temperature
    log_t = F.log_softmax(log_t.masked_fill(~valid, -1e4), -1)
    log_s = F.log_softmax(log_s.masked_fill(~valid, -1e4), -1)
    kl = (log_t.exp() * (log_t - log_s)).masked_fill(~valid, 0).sum(-1)
    return kl[present].mean() * temperature**2


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def time_losses(classes: int, crop: int, batch: int, repeats: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.softmax(torch.randn(batch, classes, crop, crop, generator=gen) * 4, 1)
    keep = torch.rand(batch, classes, generator=gen) < 0.5
    keep[:, 0] = True
    teacher = teacher * keep[:, :, None, None]
    teacher = teacher / teacher.sum(1, keepdim=True)
    teacher[:, :, : crop // 12] = 0  # a padded band, as after an affine
    logits = torch.randn(batch, classes, crop, crop, generator=gen)

    def step(loss):
        def run():
            x = logits.clone().requires_grad_(True)
            loss(x, teacher, 1.0).backward()
        return run
    return {"all classes (first version)": _ms(step(channel_kd_all_pairs), repeats),
            "present classes only (shipped)": _ms(step(channel_kd_loss), repeats)}


def time_augmentation(classes: int, size: int, crop: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    transform = build_train_transform("standard", list(range(classes)), crop)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = rng.integers(0, classes, (size, size), dtype=np.uint8)
    log_probs = np.log(rng.dirichlet(np.ones(classes), (size, size))).astype(np.float16)
    return {"without soft labels": _ms(lambda: transform(image=image, mask=mask), repeats),
            "with soft labels": _ms(lambda: transform(image=image, mask=mask,
                                                      soft=np.exp(log_probs.astype(np.float32))), repeats),
            "of which float16 log-probs -> probabilities": _ms(lambda: np.exp(log_probs.astype(np.float32)), repeats)}


def classes_per_crop(cache: str, crop: int, crops: int, min_pixels: float = 16.0) -> list[int]:
    log_probs = np.load(cache, mmap_mode="r")  # (M, S, S, C) float16, the soft-label cache
    rng = np.random.default_rng(0)
    counts = []
    for i in rng.choice(log_probs.shape[0], min(crops, log_probs.shape[0]), replace=False):
        y, x = rng.integers(0, log_probs.shape[1] - crop + 1, 2)
        p = np.exp(log_probs[i, y:y + crop, x:x + crop].astype(np.float32))
        counts.append(int((p.reshape(-1, p.shape[-1]).sum(0) >= min_pixels).sum()))
    return counts


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.time_kd", __doc__)
    p.add_argument("--classes", type=POSITIVE, default=19)
    p.add_argument("--size", type=POSITIVE, default=384, help="image size the crops are taken from")
    p.add_argument("--crop", type=POSITIVE, default=256)
    p.add_argument("--batch", type=POSITIVE, default=8)
    p.add_argument("--repeats", type=POSITIVE, default=4)
    p.add_argument("--threads", type=POSITIVE, default=1)
    p.add_argument("--soft-cache", default="", help="a soft-label cache .npy: count classes per crop")
    args = p.parse_args(argv)
    if args.crop > args.size:
        raise ValueError(f"--crop {args.crop} is larger than --size {args.size}")
    if args.soft_cache and not Path(args.soft_cache).is_file():
        raise FileNotFoundError(f"{args.soft_cache}: no such soft-label cache (runs/<name>/cache/soft_*.npy)")
    torch.set_num_threads(args.threads)
    import cv2
    cv2.setNumThreads(args.threads)
    print(f"channel-wise KD loss, forward + backward, batch {args.batch} x {args.classes} x {args.crop}², "
          f"{args.threads} thread(s):")
    for name, ms in time_losses(args.classes, args.crop, args.batch, args.repeats).items():
        print(f"  {name}: {ms:.0f} ms")
    print(f"training augmentation per sample ({args.size}² image, {args.crop}² crop):")
    for name, ms in time_augmentation(args.classes, args.size, args.crop, 10 * args.repeats).items():
        print(f"  {name}: {ms:.1f} ms")
    if args.soft_cache:
        counts = classes_per_crop(args.soft_cache, args.crop, 40)
        print(f"classes with >= 16 pixels of teacher mass in {len(counts)} random {args.crop}² crops: "
              f"mean {np.mean(counts):.1f}, min {min(counts)}, max {max(counts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
