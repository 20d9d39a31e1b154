"""Inference speed: mean seconds per image of ``inference.py`` on this machine, as a markdown table.

Three runs through the real command-line code path (decode threads, batching, TTA, full-size
upsampling, cleanup, PNG writing; model loading excluded):

1. the DSMLR ``test_images`` (100 JPEGs, 229..1600 px) with the model file's TTA (flip on),
2. the same without TTA,
3. synthetic 3000x3264 JPEG scans (a DSMLR photo enlarged, with sensor-like noise) with TTA.

    python analysis/benchmark_inference.py                       # weights/student.safetensors if present
    python analysis/benchmark_inference.py --weights path/to/model.safetensors --limit 30 --big 3

Without a model file it benchmarks a freshly built UNet tf_efficientnet_lite2 at 256x256 with random
weights (speed does not depend on the weights; cleanup time does a little, through the number of
small components). Targets on the 2-core CPU: <= 0.5 s/image with TTA on test_images, <= 1.5 s on
3000x3264. Other jobs running on the machine slow everything down: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as inference.py: before torch is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import workbench  # noqa: E402,F401
from workbench.core.cli import ArgumentParser, fail_cleanly  # noqa: E402
from workbench.core.schema import load_schema  # noqa: E402
from workbench.data.preprocess import normalization_meta  # noqa: E402
from workbench.exceptions import InferenceError  # noqa: E402
from workbench.inference.batch_pipeline import STAGES  # noqa: E402
from workbench.inference.cli import build_parser, run  # noqa: E402
from workbench.models.build import build_model  # noqa: E402
from workbench.models.modelfile import save_model  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "dsmlr-carparts"
TARGETS = {"test_images, TTA": 0.5, "3000x3264 JPEG, TTA": 1.5}


def random_student(path: Path, data_dir: Path) -> str:
    """UNet tf_efficientnet_lite2, 256x256, random weights, the dataset's schema, cleanup of small parts."""
    schema = load_schema(data_dir)
    torch.manual_seed(0)
    model = build_model("Unet", "tf_efficientnet_lite2", schema.num_classes, encoder_weights=None)
    small_parts = [n for n in schema.names if any(k in n for k in ("mirror", "light", "handle"))]
    meta = {"arch": "Unet", "encoder": "tf_efficientnet_lite2", "schema": schema.to_dict(),
            "input_size": [256, 256], "normalization": normalization_meta("imagenet"), "resize": "squash",
            "tta": {"hflip": True, "scales": [1.0]},
            "cleanup": {"enabled": True, "min_area": {n: 0.0005 for n in small_parts}}}
    save_model(path, model, meta, dtype=torch.float16)
    return "random-weight UNet tf_efficientnet_lite2 256x256"


def synthetic_scans(folder: Path, source: Path | None, count: int, width: int, height: int) -> None:
    """``count`` JPEG scans of width x height: ``source`` enlarged (or a gradient) plus noise, quality 92."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if source is not None:
        base = cv2.resize(cv2.imread(str(source)), (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        base = np.dstack(np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height)) + [
            np.full((height, width), 128.0)]).astype(np.uint8)
    for i in range(count):
        noisy = cv2.add(base, rng.integers(0, 12, base.shape, dtype=np.uint8))
        cv2.imwrite(str(folder / f"scan{i:02d}.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 92])


def scan_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (width, height)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 3000x3264, got {text!r}") from None
    return width, height


def bench(name: str, input_dir: Path, out_dir: Path, weights: Path, extra: list[str]) -> dict:
    args = build_parser().parse_args(["--input", str(input_dir), "--output", str(out_dir),
                                      "--weights", str(weights), "--quiet", *extra])
    stats = run(args)
    if stats.failures:
        raise InferenceError(f"{name}: {len(stats.failures)} images failed: {stats.failures[:3]}")
    n = stats.written
    return {"name": name, "n": n, "s_per_image": stats.seconds / n,
            **{stage: 1000 * stats.stage_seconds[stage] / n for stage in STAGES}}


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="analysis/benchmark_inference.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=REPO / "weights" / "student.safetensors",
                   help="model file (default: the shipped student; a random lite2 UNet if it does not exist)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DSMLR dataset folder (with test_images/)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    p.add_argument("--big", type=int, default=5, help="number of synthetic scans")
    p.add_argument("--big-size", type=scan_size, default="3000x3264", help="WIDTHxHEIGHT of the synthetic scans")
    p.add_argument("--threads", type=int, help="passed to inference.py (default: its own)")
    p.add_argument("--workers", type=int, help="passed to inference.py (default: its own)")
    p.add_argument("--batch-size", type=int, help="passed to inference.py (default: its own)")
    args = p.parse_args(argv)

    test_dir = args.data / "test_images"
    if not test_dir.is_dir():
        raise FileNotFoundError(f"{test_dir} not found (pass --data)")
    width, height = args.big_size
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in
             (("threads", args.threads), ("workers", args.workers), ("batch_size", args.batch_size)) if v]

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        tmp = Path(tmp)
        if args.weights.is_file():
            weights, described = args.weights, str(args.weights)
        else:
            weights = tmp / "random_lite2.safetensors"
            described = random_student(weights, args.data)
        images = sorted(p for p in test_dir.iterdir() if p.is_file())[: args.limit]
        subset = tmp / "test_images"
        subset.mkdir()
        for image in images:
            (subset / image.name).symlink_to(image.resolve())
        synthetic_scans(tmp / "scans", images[0] if images else None, args.big, width, height)
        warmup = tmp / "warmup"
        warmup.mkdir()
        for image in images[:2]:
            (warmup / image.name).symlink_to(image.resolve())

        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        bench("warm-up", warmup, tmp / "out0", weights, extra)
        rows = [bench("test_images, TTA", subset, tmp / "out1", weights, extra),
                bench("test_images, no TTA", subset, tmp / "out2", weights, extra + ["--no-tta"]),
                bench(f"{width}x{height} JPEG, TTA", tmp / "scans", tmp / "out3", weights, extra)]
        total = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        shutil.rmtree(tmp / "scans", ignore_errors=True)

    print(f"model: {described}; CPUs usable: {len(os.sched_getaffinity(0))}, torch threads: "
          f"{torch.get_num_threads()}, device: {'cuda' if torch.cuda.is_available() else 'cpu'}; "
          f"load average {load_before:.1f} before, {load_after:.1f} after ({total:.0f} s)\n")
    print("| input | images | s/image | images/s | " + " | ".join(STAGES) + " | target |")
    print("| --- " + "| ---: " * (3 + len(STAGES)) + "| --- |")
    for r in rows:
        target = TARGETS.get(r["name"].replace(f"{width}x{height}", "3000x3264"))
        verdict = f"<= {target} s {'ok' if r['s_per_image'] <= target else 'MISSED'}" if target else ""
        print(f"| {r['name']} | {r['n']} | {r['s_per_image']:.3f} | {1 / r['s_per_image']:.2f} | "
              + " | ".join(f"{r[s]:.0f} ms" for s in STAGES) + f" | {verdict} |")
    print("\nStage columns are per-image means; decode and encode+write run in background threads, "
          "overlapped with the model, so they add up to more than the wall time.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
