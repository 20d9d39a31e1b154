"""inference.py end to end: output format for odd inputs, bad inputs, folders, the CLI itself."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.core.schema import DEFAULT_SCHEMA
from workbench.data.imageio import decode_image, read_image
from workbench.exceptions import ImageReadError
from workbench.inference.cli import main

REPO = Path(__file__).resolve().parent.parent
DSMLR = REPO.parent / "shared" / "datasets" / "dsmlr-carparts"
FAST = ["--threads", "1", "--workers", "1", "--quiet"]


def run_main(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv] + FAST)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
                          np.full((height, width, 1), 128.0)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


def exif_rotated(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# name -> (writer, displayed (width, height)). Sizes are all different so a mix-up would show.
ODD_INPUTS = {
    "gray.png": (lambda p: gradient(37, 23).convert("L").save(p), (37, 23)),
    "rgba.png": (lambda p: gradient(40, 30).convert("RGBA").save(p), (40, 30)),
    "deep16.png": (lambda p: Image.fromarray((np.arange(33 * 21, dtype=np.uint16).reshape(21, 33) * 90)).save(p),
                   (33, 21)),
    "cmyk.jpg": (lambda p: gradient(41, 29).convert("CMYK").save(p, quality=90), (41, 29)),
    "rotated.jpg": (lambda p: gradient(48, 32).save(p, exif=exif_rotated(6)), (32, 48)),
    "big_rotated.jpg": (lambda p: gradient(700, 520).save(p, exif=exif_rotated(8)), (520, 700)),  # reduced decode
    "one_pixel.jpg": (lambda p: gradient(1, 1).save(p), (1, 1)),
    "one_pixel.png": (lambda p: gradient(1, 1).save(p), (1, 1)),
    "bitmap.bmp": (lambda p: gradient(30, 20).save(p), (30, 20)),
    "photo.webp": (lambda p: gradient(31, 22).save(p), (31, 22)),
    "scan.tiff": (lambda p: gradient(29, 19).save(p), (29, 19)),
    "palette.gif": (lambda p: gradient(28, 18).convert("P").save(p), (28, 18)),
    "upper.case.JPG": (lambda p: gradient(27, 17).save(p, format="JPEG"), (27, 17)),
}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory, tiny_model):
    src, out = tmp_path_factory.mktemp("odd_in"), tmp_path_factory.mktemp("odd") / "out" / "nested"
    for name, (write, _) in ODD_INPUTS.items():
        write(src / name)
    # odd stems clash: one_pixel.jpg and one_pixel.png both want one_pixel.png
    before = digest(src)
    rc = main(["--input", str(src), "--output", str(out), "--weights", str(tiny_model)] + FAST)
    return rc, src, out, before


@pytest.mark.parametrize("name", sorted(set(ODD_INPUTS) - {"one_pixel.png"}))
def test_odd_inputs_give_schema_masks_of_the_displayed_size(odd_run, name):
    _, _, out, _ = odd_run
    mask = Image.open(out / (Path(name).stem + ".png"))
    assert mask.format == "PNG" and mask.mode == "L"
    assert mask.size == ODD_INPUTS[name][1]
    assert set(np.unique(np.asarray(mask))) <= set(DEFAULT_SCHEMA.values)


def test_odd_run_reports_the_stem_clash_and_leaves_inputs_alone(odd_run):
    rc, src, out, before = odd_run
    assert rc == 1  # one_pixel.png is skipped: its mask would overwrite one_pixel.jpg's
    assert len(list(out.iterdir())) == len(ODD_INPUTS) - 1
    assert digest(src) == before


def test_reduced_jpeg_decoding_reports_the_full_size(tmp_path):
    path = tmp_path / "big.jpg"
    gradient(1000, 600).save(path, exif=exif_rotated(6), quality=90)
    full = read_image(path)
    reduced = read_image(path, min_size=(64, 64))
    assert full.size == reduced.size == (1000, 600) and full.image.shape == (1000, 600, 3)
    assert reduced.reduction == 4 and reduced.image.shape == (250, 150, 3)  # never below 2x min_size
    assert read_image(path, min_size=(128, 128)).reduction == 2
    assert read_image(path, min_size=(256, 256)).reduction == 1


@pytest.mark.parametrize("name,content,reason", [
    ("truncated.jpg", "truncated", "truncated"),
    ("empty.jpg", b"", "empty file"),
    ("notes.txt", b"just some text, not a picture\n", "not an image"),
    ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt or truncated PNG"),
])
def test_bad_file_is_reported_and_skipped(tmp_path, capsys, tiny_model, name, content, reason):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    gradient(50, 40).save(src / "good.jpg")
    if content == "truncated":
        gradient(300, 200).save(src / "full.jpg", quality=95)
        data = (src / "full.jpg").read_bytes()
        (src / "full.jpg").unlink()
        content = data[: len(data) // 2]
    (src / name).write_bytes(content)
    rc, text = run_main(capsys, "--input", src, "--output", out, "--weights", tiny_model)
    assert rc == 1
    assert name in text and reason in text
    assert "Traceback" not in text
    assert (out / "good.png").exists() and not (out / (Path(name).stem + ".png")).exists()
    with pytest.raises(ImageReadError, match=reason):
        decode_image(content)


def test_empty_input_folder(tmp_path, capsys, tiny_model):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sub").mkdir()
    rc, text = run_main(capsys, "--input", tmp_path / "in", "--output", tmp_path / "out", "--weights", tiny_model)
    assert rc == 2 and "no image files in input folder" in text and "--recursive" in text
    assert "Traceback" not in text and not (tmp_path / "out").exists()


def test_missing_input_folder(tmp_path, capsys, tiny_model):
    rc, text = run_main(capsys, "--input", tmp_path / "nope", "--output", tmp_path / "out", "--weights", tiny_model)
    assert rc == 2 and f"input folder not found: {tmp_path / 'nope'}" in text and "Traceback" not in text


@pytest.mark.parametrize("case", ["is_a_file", "under_a_file", "read_only"])
def test_unwritable_output_folder(tmp_path, capsys, tiny_model, case):
    src = tmp_path / "in"
    src.mkdir()
    gradient(20, 20).save(src / "a.jpg")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    if case == "is_a_file":
        out, expected = blocker, "exists and is not a folder"
    elif case == "under_a_file":
        out, expected = blocker / "out", "cannot create output folder"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write to read-only folders")
        out, expected = tmp_path / "ro", "is not writable"
        out.mkdir(mode=0o555)
    rc, text = run_main(capsys, "--input", src, "--output", out, "--weights", tiny_model)
    assert rc == 2 and expected in text and str(out) in text and "Traceback" not in text


def test_missing_weights(tmp_path, capsys):
    gradient(20, 20).save(tmp_path / "a.jpg")
    rc, text = run_main(capsys, "--input", tmp_path, "--output", tmp_path / "out",
                        "--weights", tmp_path / "missing.safetensors")
    assert rc == 2 and "weights file not found" in text and "missing.safetensors" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}    "])
def test_corrupt_weights(tmp_path, capsys, content):
    gradient(20, 20).save(tmp_path / "a.jpg")
    (tmp_path / "bad.safetensors").write_bytes(content)
    rc, text = run_main(capsys, "--input", tmp_path, "--output", tmp_path / "out",
                        "--weights", tmp_path / "bad.safetensors")
    assert rc == 2 and "cannot load weights" in text and "bad.safetensors" in text
    assert "Traceback" not in text


def test_unavailable_device(tmp_path, capsys, tiny_model):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    gradient(20, 20).save(tmp_path / "a.jpg")
    rc, text = run_main(capsys, "--input", tmp_path, "--output", tmp_path / "out", "--weights", tiny_model,
                        "--device", "cuda")
    assert rc == 2 and "CUDA is not available" in text


def test_recursive_mirrors_sub_folders(tmp_path, capsys, tiny_model):
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / ".hidden").mkdir()
    gradient(20, 20).save(src / "a.jpg")
    gradient(21, 20).save(src / "sub" / "b.png")
    gradient(22, 20).save(src / "sub" / "deeper" / "c.jpg")
    gradient(23, 20).save(src / ".hidden" / "d.jpg")
    gradient(24, 20).save(src / ".e.jpg")

    rc, _ = run_main(capsys, "--input", src, "--output", tmp_path / "top", "--weights", tiny_model)
    assert rc == 0
    assert sorted(p.relative_to(tmp_path / "top").as_posix() for p in (tmp_path / "top").rglob("*.png")) == ["a.png"]

    out = src / "predictions"  # inside the input folder: must not be read as input on a second run
    for _ in range(2):
        rc, text = run_main(capsys, "--input", src, "--output", out, "--weights", tiny_model, "--recursive")
        assert rc == 0, text
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == \
        ["a.png", "sub/b.png", "sub/deeper/c.png"]
    assert Image.open(out / "sub" / "deeper" / "c.png").size == (22, 20)


def test_output_into_input_folder_never_overwrites_inputs(tmp_path, capsys, tiny_model):
    gradient(20, 20).save(tmp_path / "a.jpg")
    gradient(20, 20).save(tmp_path / "b.png")
    before = (tmp_path / "b.png").read_bytes()
    rc, text = run_main(capsys, "--input", tmp_path, "--output", tmp_path, "--weights", tiny_model)
    assert rc == 1 and "b.png" in text and "would overwrite an input file" in text
    assert (tmp_path / "b.png").read_bytes() == before and (tmp_path / "a.png").exists()


def test_flags_and_benchmark_report(tmp_path, capsys, tiny_model):
    gradient(60, 40).save(tmp_path / "a.jpg")
    gradient(40, 60).save(tmp_path / "b.jpg")
    rc, text = run_main(capsys, "--input", tmp_path, "--output", tmp_path / "o1", "--weights", tiny_model,
                        "--no-tta", "--no-cleanup", "--benchmark", "--batch-size", "1")
    assert rc == 0
    for stage in ("decode", "model", "upsample+argmax", "cleanup", "encode+write"):
        assert stage in text
    assert text.strip().splitlines()[-1].startswith("done: 2 mask(s) written")
    rc, text = run_main(capsys, "--input", tmp_path / "a.jpg", "--output", tmp_path / "o2", "--weights", tiny_model,
                        "--scales", "1.0", "0.5")
    assert rc == 0 and Image.open(tmp_path / "o2" / "a.png").size == (60, 40)


def test_cli_end_to_end_on_dsmlr_test_images(tmp_path, dsmlr_model, dsmlr_schema):
    test_images = DSMLR / "test_images"
    if not test_images.is_dir():
        pytest.skip(f"{test_images} not found")
    src, out = tmp_path / "in", tmp_path / "predictions"
    src.mkdir()
    names = sorted(os.listdir(test_images))[:3]
    for name in names:
        shutil.copy(test_images / name, src / name)
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1")
    result = subprocess.run([sys.executable, "inference.py", "--input", str(src), "--output", str(out),
                             "--weights", str(dsmlr_model), "--threads", "1"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert "3 mask(s) written" in last and "images/s" in last and "ms per image" in last
    for name in names:
        mask = Image.open(out / (Path(name).stem + ".png"))
        assert mask.mode == "L" and mask.size == Image.open(src / name).size
        assert set(np.unique(np.asarray(mask))) <= set(dsmlr_schema.values)
