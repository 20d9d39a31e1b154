"""Shared fixtures: tiny model files (random weights, 64x64 input) and the DSMLR dataset path."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import workbench  # noqa: E402,F401  (import guard before timm / smp)
from workbench.core.schema import DEFAULT_SCHEMA, ClassSchema, load_schema  # noqa: E402
from workbench.data.preprocess import normalization_meta  # noqa: E402
from workbench.models.build import build_model  # noqa: E402
from workbench.models.modelfile import save_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DSMLR = REPO.parent / "shared" / "datasets" / "dsmlr-carparts"


def make_model_file(path: Path, schema: ClassSchema = DEFAULT_SCHEMA, input_size: int = 64, **extra) -> Path:
    """A UNet tf_efficientnet_lite0 with random weights saved as a carparts model file."""
    torch.manual_seed(0)
    model = build_model("Unet", "tf_efficientnet_lite0", schema.num_classes, encoder_weights=None)
    meta = {"arch": "Unet", "encoder": "tf_efficientnet_lite0", "schema": schema.to_dict(),
            "input_size": [input_size, input_size], "normalization": normalization_meta("imagenet"),
            "resize": "squash", **extra}
    save_model(path, model, meta, dtype=torch.float16)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Default five-class schema, flip TTA, cleanup enabled for door handles."""
    return make_model_file(tmp_path_factory.mktemp("models") / "tiny.safetensors",
                           tta={"hflip": True, "scales": [1.0]},
                           cleanup={"enabled": True, "min_area": {"door_handle": 0.001}})


@pytest.fixture(scope="session")
def dsmlr_schema() -> ClassSchema:
    if not (DSMLR / "classes.json").exists():
        pytest.skip(f"DSMLR dataset not found at {DSMLR}")
    return load_schema(DSMLR)


@pytest.fixture(scope="session")
def dsmlr_model(tmp_path_factory, dsmlr_schema) -> Path:
    """DSMLR 19-class schema (with left/right flip pairs), cleanup of a few small parts."""
    return make_model_file(tmp_path_factory.mktemp("models") / "dsmlr.safetensors", dsmlr_schema,
                           cleanup={"enabled": True, "min_area": {"left_mirror": 0.0005, "right_mirror": 0.0005}})


@pytest.fixture(scope="session")
def model_file():
    """``model_file(path, schema=DEFAULT_SCHEMA, input_size=64, **metadata)`` -> path of a new tiny model file."""
    return make_model_file


# ---------------------------------------------------------------- tiny datasets for training tests
import json  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

torch.set_num_threads(2)

TINY_SCHEMA = {
    "classes": [{"name": "background", "value": 0}, {"name": "left_light", "value": 10},
                {"name": "right_light", "value": 20}, {"name": "front_door", "value": 30},
                {"name": "back_door", "value": 40}],
    "hflip_pairs": [["left_light", "right_light"]],
}


def make_tiny_dataset(root: Path, n: int = 12, size: tuple[int, int] = (48, 56), seed: int = 0) -> Path:
    """``n`` images (H, W) = ``size`` with coloured rectangles; masks use TINY_SCHEMA's values. Left
    lights sit on the left half, right lights on the right, so orientation matters."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.json").write_text(json.dumps(TINY_SCHEMA))
    h, w = size
    colours = {10: (255, 60, 60), 20: (60, 60, 255), 30: (60, 200, 60), 40: (200, 200, 60)}
    for i in range(n):
        img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        for value, (x0, x1) in ((30, (0, w // 2)), (40, (w // 2, w)), (10, (0, w // 3)), (20, (2 * w // 3, w))):
            y = int(rng.integers(0, h - 12))
            x = int(rng.integers(x0, max(x0 + 1, x1 - 10)))
            hh, ww = (12, 10) if value in (30, 40) else (5, 5)
            mask[y:y + hh, x:x + ww] = value
            img[y:y + hh, x:x + ww] = colours[value]
        cv2.imwrite(str(root / "images" / f"img{i:02d}.jpg"), img[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"img{i:02d}.png"), mask)
    return root


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_tiny_dataset(tmp_path / "tiny")


def tiny_overrides(data: Path, out: Path, **extra) -> list[str]:
    """Recipe overrides for a seconds-long training run on the tiny dataset."""
    args = {"data": data, "out": out, "arch": "unet", "encoder": "tf_efficientnet_lite0",
            "encoder_weights": "none", "image_size": 64, "batch_size": 4, "epochs": 1, "folds": 3,
            "fold": 0, "folds_file": data.parent / "folds.json", "warmup_epochs": 0, "name": "tiny"}
    args.update(extra)
    return [f"{k}={v}" for k, v in args.items()]


@pytest.fixture
def dsmlr() -> Path:
    if not (DSMLR / "images").is_dir():
        pytest.skip(f"DSMLR data not found at {DSMLR}")
    return DSMLR


# ------------------------------------------------------------------------------ skipped tests
# Every run prints how many tests skipped. With CARPARTS_CI=1 (set by .ci/run) the run fails when a
# test that needs the shared dataset skipped although the dataset is present (a broken path, a
# renamed file), or when the browser test skipped (Chromium missing). A test that needs the dataset
# says "DSMLR" in its skip reason; the browser tests say "chromium".
SKIPS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        SKIPS.append((report.nodeid, reason))


def forbidden_skips(skips: list[tuple[str, str]], dataset_present: bool) -> list[tuple[str, str]]:
    """The skips CI does not accept: dataset skips while the dataset is there, and browser skips."""
    return [(node, reason) for node, reason in skips
            if (dataset_present and "dsmlr" in reason.lower()) or "chromium" in reason.lower()]


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CARPARTS_CI") == "1" and forbidden_skips(SKIPS, (DSMLR / "images").is_dir()):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    terminalreporter.write_line(f"skipped tests: {len(SKIPS)}")
    if os.environ.get("CARPARTS_CI") == "1":
        for node, reason in forbidden_skips(SKIPS, (DSMLR / "images").is_dir()):
            terminalreporter.write_line(f"CI error: {node} skipped ({reason}); the dataset is at {DSMLR} "
                                        "and Chromium must be installed", red=True)
