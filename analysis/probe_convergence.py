"""How fast does each model variant learn? Every variant trains from the same seed on the same fixed
stream of training batches, and the training loss is averaged over each quarter of the steps.

examples:
  python -m analysis.probe_convergence --data ../shared/datasets/dsmlr-carparts --steps 160 \\
      --image-size 256 --crop-size 128        # the default variants: FPN, UNet, UNet head_scale 4, + deep supervision
  python -m analysis.probe_convergence --data ../shared/datasets/dsmlr-carparts --steps 160 \\
      --image-size 256 --crop-size 128 --out runs/diag/probe.json \\
      --variant "fpn: arch=fpn decoder_channels=[128,64]" \\
      --variant "unet_hs4: arch=unet head_scale=4 decoder_lr_mult=5" \\
      --variant "unet_hs4_ds: arch=unet head_scale=4 decoder_lr_mult=5 deep_supervision=[0.5,0.25]"

What it measures: fold 0's training images (every image outside fold 0 in the project's folds file,
the split train.py uses; fold=N for another) are squashed to --image-size; --steps batches of random
--crop-size crops with the standard augmentation are drawn once, shuffled and re-seeded per epoch as
the Trainer does (they are the first batches a training run with these data settings sees), and
kept. Each variant's model
is then initialised from ``seed`` as train.py initialises it and takes one AdamW step per batch at a
constant learning rate (no warm-up, no schedule), loss CE + Dice. Deep-supervision losses are added to
the loss that is optimised, but the reported number is always the main output's loss, so variants
compare on the same quantity.

How to read it: a lower loss after the same batches means faster optimisation on the training
images; it says nothing about held-out accuracy. The first quarter shows the start (a large value
there is a poorly scaled initial output), the last quarter where each variant got to. It is one seed
and one batch stream: differences of the order of the seed-to-seed spread are noise (run it again
with seed=1 to see that spread).

A variant is ``"name: key=value ..."`` with the config keys of train.py that change the model or the
optimiser (arch, encoder, encoder_weights, decoder_channels, head_scale, deep_supervision,
normalization, lr, decoder_lr_mult, weight_decay, loss, dice_weight, precision). Defaults for every
variant: encoder=tf_efficientnet_lite2 encoder_weights=imagenet lr=1e-3 weight_decay=1e-4; the
positional key=value settings change them for all variants, and also set the shared data keys
(batch_size=8 augment=standard seed=0 fold=0 folds folds_file folds_seed device). Prints a markdown table;
--out saves every step's loss as JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from analysis._cli import COUNT, POSITIVE, parser  # noqa: E402
from workbench.core.cli import fail_cleanly  # noqa: E402

# Keys a variant may set: what changes the model, the optimiser or the loss.
VARIANT_KEYS = ("arch", "encoder", "encoder_weights", "decoder_channels", "head_scale", "deep_supervision",
                "normalization", "lr", "decoder_lr_mult", "weight_decay", "loss", "dice_weight", "precision")
# Keys every variant shares, because they make the batch stream (or the machine): positional only.
SHARED_KEYS = ("batch_size", "augment", "seed", "fold", "folds", "folds_file", "folds_seed", "device")
# Keys with their own option.
OPTION_KEYS = {"data": "--data", "image_size": "--image-size", "crop_size": "--crop-size", "threads": "--threads",
               "max_steps": "--steps"}
PROBE_DEFAULTS = {"encoder": "tf_efficientnet_lite2", "encoder_weights": "imagenet", "lr": 1e-3,
                  "weight_decay": 1e-4, "batch_size": 8, "fold": 0}
DEFAULT_VARIANTS = (
    "fpn: arch=fpn decoder_channels=[128,64]",
    "unet: arch=unet decoder_lr_mult=5",
    "unet_hs4: arch=unet head_scale=4 decoder_lr_mult=5",
    "unet_hs4_ds: arch=unet head_scale=4 decoder_lr_mult=5 deep_supervision=[0.5,0.25]",
)
QUARTERS = 4


# ------------------------------------------------------------------------------------- settings

def split_settings(text: str) -> list[str]:
    """``a=1 b=[1, 2]`` -> ``["a=1", "b=[1, 2]"]``: whitespace separates settings except inside brackets."""
    tokens, current, depth = [], "", 0
    for ch in text:
        depth += (ch in "[{") - (ch in "]}")
        if ch.isspace() and depth <= 0:
            if current:
                tokens.append(current)
            current = ""
        else:
            current += ch
    if current:
        tokens.append(current)
    return tokens


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name: key=value ..."`` -> (name, ["key=value", ...]); :class:`UsageError` for another shape."""
    from workbench.exceptions import UsageError

    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() or c == "=" for c in name):
        raise UsageError(f"--variant {text!r}: expected 'name: key=value ...', e.g. "
                         "--variant \"unet_hs4: arch=unet head_scale=4\"")
    return name, split_settings(rest)


def setting_keys(settings: list[str]) -> list[str]:
    from workbench.core import config

    recipe, overrides = config.parse_overrides(settings)
    if recipe is not None:
        from workbench.exceptions import ConfigError
        raise ConfigError("recipe= is not taken here: give the keys themselves")
    return list(overrides)


def as_setting(key: str, value) -> str:
    return f"{key}={json.dumps(value)}"  # JSON is YAML: paths and names stay strings


def resolve_variants(args, shared: list[str], variants: list[str]) -> tuple[dict, list[tuple[str, dict, list[str]]]]:
    """(the shared config, [(name, resolved config, its own settings)]) with the project's checks
    (:func:`workbench.core.config.resolve`) plus which keys may be set where."""
    from workbench.core import config
    from workbench.exceptions import ConfigError, UsageError

    for key in setting_keys(shared):
        if key in OPTION_KEYS:
            raise UsageError(f"{key}= is set with {OPTION_KEYS[key]} here")
        if key in config.DEFAULTS and key not in VARIANT_KEYS + SHARED_KEYS:
            raise ConfigError(f"{key}= has no effect on this probe; it takes {', '.join(VARIANT_KEYS + SHARED_KEYS)}")
    options = {"data": args.data or config.DEFAULTS["data"], "image_size": args.image_size, "crop_size": args.crop_size}
    base = [as_setting(k, v) for k, v in PROBE_DEFAULTS.items()] + shared + [as_setting(k, v) for k, v in options.items()]
    shared_cfg = config.resolve(base)

    resolved, names = [], set()
    for text in variants:
        name, settings = parse_variant(text)
        if name in names:
            raise UsageError(f"--variant {name!r} is given twice; give each variant its own name")
        names.add(name)
        try:
            for key in setting_keys(settings):
                if key in SHARED_KEYS or key in OPTION_KEYS:
                    where = OPTION_KEYS.get(key, f"a {key}=... setting outside --variant")
                    raise ConfigError(f"{key} is shared by every variant (they train on the same batches); set it "
                                      f"with {where}")
                if key in config.DEFAULTS and key not in VARIANT_KEYS:
                    raise ConfigError(f"{key}= has no effect on this probe; a variant sets {', '.join(VARIANT_KEYS)}")
            cfg = config.resolve(base + settings)
        except ConfigError as err:
            raise ConfigError(f"--variant {name!r}: {err}") from None
        resolved.append((name, cfg, settings))
    return shared_cfg, resolved


# --------------------------------------------------------------------------------- the probe

def batch_stream(cfg: dict, ds, train_idx, steps: int) -> list[dict]:
    """The first ``steps`` batches of the Trainer's loader over ``train_idx`` (same augmentation,
    shuffling and per-epoch re-seeding as :meth:`workbench.training.trainer.Trainer.train_epoch`)."""
    import torch

    from workbench.data.augment import build_train_transform
    from workbench.training.array_dataset import ArrayDataset
    from workbench.training.trainer import reseed_epoch

    transform = build_train_transform(cfg["augment"], ds.schema.flip_permutation, cfg["crop_size"])
    data = ArrayDataset(ds.images[train_idx], ds.masks[train_idx], transform)
    generator = torch.Generator().manual_seed(cfg["seed"])
    loader = torch.utils.data.DataLoader(data, batch_size=cfg["batch_size"], shuffle=True,
                                         drop_last=len(data) > cfg["batch_size"], generator=generator)
    batches, epoch = [], 0
    while len(batches) < steps:
        epoch += 1
        reseed_epoch(cfg["seed"] * 1000 + epoch, generator, transform)
        for batch in loader:
            batches.append({"image": batch["image"], "mask": batch["mask"].to(torch.uint8)})  # uint8: 1/8 the RAM
            if len(batches) == steps:
                break
    return batches


def build(cfg: dict, num_classes: int):
    """The variant's model, initialised from ``cfg['seed']`` as the Trainer does."""
    import torch

    from workbench.models.build import build_model
    from workbench.training.trainer import seed_everything

    seed_everything(cfg["seed"])
    model = build_model(cfg["arch"], cfg["encoder"], num_classes, cfg["encoder_weights"], cfg["decoder_channels"],
                        cfg["head_scale"], len(cfg["deep_supervision"]))
    return model.to(memory_format=torch.channels_last)


def train_losses(cfg: dict, model, batches: list[dict], num_classes: int, device, on_step=None) -> list[float]:
    """One AdamW step per batch at a constant rate; the main output's loss of each step (NaN where
    the loss or the gradient was not finite: that update is skipped, as the Trainer skips it)."""
    import torch

    from workbench.core.runtime import autocast
    from workbench.data.preprocess import normalization_meta, to_tensor
    from workbench.models.build import parameter_groups
    from workbench.training.losses import SegLoss
    from workbench.training.trainer import supervised_loss

    model = model.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg["lr"], cfg["decoder_lr_mult"]), lr=cfg["lr"],
                                  weight_decay=cfg["weight_decay"])
    seg_loss = SegLoss(cfg["loss"], num_classes, cfg["dice_weight"])
    norm = normalization_meta(cfg["normalization"])
    losses = []
    for step, batch in enumerate(batches):
        x, y = to_tensor(batch["image"], norm, device), batch["mask"].to(device).long()
        with autocast(device, cfg["precision"]):
            logits = model(x)
        main, loss = supervised_loss(seg_loss, model, logits, y, cfg["deep_supervision"])
        optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()
            finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))))
        if finite:
            optimizer.step()
        losses.append(float(main.detach()) if finite else math.nan)
        if on_step is not None:
            on_step(step, losses)
    return losses


# ---------------------------------------------------------------------------------- reporting

def quarter_ranges(steps: int, parts: int = QUARTERS) -> list[tuple[int, int]]:
    """[(first, last)] 1-based step ranges of ``parts`` near-equal parts (fewer when steps < parts)."""
    parts = min(parts, steps)
    bounds = [i * steps // parts for i in range(parts + 1)]
    return [(a + 1, b) for a, b in zip(bounds, bounds[1:])]


def quarter_means(losses: list[float], ranges: list[tuple[int, int]]) -> list[float]:
    """Mean loss of each range over its finite steps (NaN when none was finite)."""
    import numpy as np

    means = []
    for a, b in ranges:
        part = np.asarray(losses[a - 1:b], dtype=float)
        part = part[np.isfinite(part)]
        means.append(float(part.mean()) if len(part) else math.nan)
    return means


def range_label(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}–{b}"


def markdown_table(results: list[dict], ranges: list[tuple[int, int]]) -> str:
    lines = ["| variant | " + " | ".join(range_label(a, b) for a, b in ranges) + " |",
             "|---|" + "---:|" * len(ranges)]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join("n/a" if not math.isfinite(v) else f"{v:.2f}"
                                                        for v in r["quarters"]) + " |")
    return "\n".join(lines)


def cfg_loss(variants) -> str:
    names = {"ce_dice": "CE + Dice", "bce_dice": "BCE + Dice", "ce": "CE"}
    return " / ".join(dict.fromkeys(names.get(cfg["loss"], cfg["loss"]) for _, cfg, _ in variants))


def json_losses(losses: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in losses]  # JSON has no NaN


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    p = parser("python -m analysis.probe_convergence", __doc__)
    p.add_argument("settings", nargs="*", metavar="key=value",
                   help="settings for every variant (e.g. encoder=tf_efficientnet_lite0) and the shared data keys "
                        "(batch_size, augment, seed, fold, folds, folds_file, folds_seed, device)")
    p.add_argument("--variant", action="append", metavar="'NAME: key=value ...'",
                   help="a variant to train (repeat the option); default: " + "; ".join(DEFAULT_VARIANTS))
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: train.py's)")
    p.add_argument("--steps", type=POSITIVE, default=160, help="batches (optimiser steps) per variant")
    p.add_argument("--image-size", type=POSITIVE, default=256, help="images are squashed to this size")
    p.add_argument("--crop-size", type=COUNT, default=128, help="random crops of this size (0: whole images)")
    p.add_argument("--limit-images", type=POSITIVE, metavar="N", help="only the first N training images of the fold")
    p.add_argument("--threads", type=POSITIVE, metavar="N", help="CPU threads (default: torch's)")
    p.add_argument("--out", metavar="FILE.json", help="also write every step's loss per variant to this JSON file")
    args = p.parse_intermixed_args(argv)

    shared_cfg, variants = resolve_variants(args, args.settings, args.variant or list(DEFAULT_VARIANTS))

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from workbench.core.atomic import atomic_write
    from workbench.core.runtime import resolve_device
    from workbench.data.dataset import load_dataset
    from workbench.data.folds import split_for
    from workbench.exceptions import ConfigError
    from workbench.models.build import count_parameters

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(shared_cfg["device"])
    ds = load_dataset(shared_cfg["data"], shared_cfg["image_size"])
    train_idx, _, folds_path = split_for(shared_cfg, ds)
    if args.limit_images:
        train_idx = train_idx[:args.limit_images]
    num_classes = ds.schema.num_classes
    # Every model is built (and so checked) before any trains: a variant that cannot be built fails in seconds.
    models = []
    for name, cfg, _ in variants:
        try:
            models.append(build(cfg, num_classes))
        except ConfigError as err:
            raise ConfigError(f"--variant {name!r}: {err}") from None
    batches = batch_stream(shared_cfg, ds, train_idx, args.steps)
    size, crop = shared_cfg["image_size"], shared_cfg["crop_size"]
    split = "all images" if shared_cfg["fold"] < 0 else f"all but fold {shared_cfg['fold']} of {folds_path}"
    print(f"{args.steps} batches of {shared_cfg['batch_size']} " + (f"random {crop}² crops of " if crop else "")
          + f"{size}² images ({shared_cfg['augment']} augmentation) from {len(train_idx)} training images ({split}); "
          f"seed {shared_cfg['seed']}, {device}, {torch.get_num_threads()} threads", flush=True)

    ranges, results = quarter_ranges(args.steps), []
    err = Console(stderr=True)
    for i, (name, cfg, settings) in enumerate(variants):
        model, models[i] = models[i], None  # freed after its run
        n_params = count_parameters(model)
        t0 = time.perf_counter()
        with Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
                      TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task(name, total=len(batches), loss=math.nan)

            def on_step(step, losses, task=task, progress=progress, t0=t0, name=name):
                progress.update(task, advance=1, loss=quarter_means(losses, [(max(1, step - 8), step + 1)])[0])
                done = [r for r in ranges if r[1] == step + 1]
                if done and not err.is_terminal and step + 1 < len(batches):  # a log: one line per quarter
                    print(f"{name}: steps {range_label(*done[0])} mean loss {quarter_means(losses, done)[0]:.3f}, "
                          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

            losses = train_losses(cfg, model, batches, num_classes, device, on_step)
        seconds = time.perf_counter() - t0
        del model
        quarters = quarter_means(losses, ranges)
        skipped = sum(not math.isfinite(v) for v in losses)
        print(f"{name}: {' '.join(settings)} ({n_params / 1e6:.2f} M parameters): {args.steps} steps in {seconds:.0f} s, "
              f"mean loss over steps {range_label(*ranges[-1])} {quarters[-1]:.3f}"
              + (f"; {skipped} steps not finite (skipped, left out of the means)" if skipped else ""), flush=True)
        results.append({"name": name, "settings": settings,
                        "config": {k: cfg[k] for k in VARIANT_KEYS}, "parameters": n_params,
                        "seconds": round(seconds, 1), "quarters": quarters, "losses": losses, "skipped": skipped})

    print()
    print(f"mean training loss of the main output over steps ({cfg_loss(variants)}, {args.steps} batches, constant lr)")
    print()
    print(markdown_table(results, ranges))
    print()
    print(f"Single seed (seed={shared_cfg['seed']}) and one batch stream: differences of the order of the "
          "seed-to-seed spread are noise (rerun with seed=1 to see it).")
    if args.out:
        report = {"steps": args.steps, "image_size": shared_cfg["image_size"], "crop_size": shared_cfg["crop_size"],
                  "batch_size": shared_cfg["batch_size"], "augment": shared_cfg["augment"], "seed": shared_cfg["seed"],
                  "data": str(shared_cfg["data"]), "fold": shared_cfg["fold"], "folds_file": str(folds_path),
                  "train_images": len(train_idx), "device": str(device), "threads": torch.get_num_threads(),
                  "ranges": [list(r) for r in ranges],
                  "variants": [dict(r, quarters=json_losses(r["quarters"]), losses=json_losses(r["losses"]))
                               for r in results]}
        atomic_write(args.out, json.dumps(report, indent=1))
        print(f"per-step losses -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
