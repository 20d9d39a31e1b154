"""Where the CPU time of one training step goes: data loading + augmentation, encoder forward,
decoder + head forward, loss, backward, optimiser step; for each recipe given.

    python -m analysis.profile_training recipe=fpn_effnet [key=value ...] [--steps 6] [--decoders 256,128 128,64]

Real data and the recipe's own augmentation pipeline; the first step is a warm-up and not counted.
``--decoders`` repeats the model part for other FPN/UNet decoder widths (data loading is shared).
Prints a rich table and writes nothing.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from workbench.core.cli import ArgumentParser, fail_cleanly  # noqa: E402


def profile_model(cfg: dict, batches: list[dict], num_classes: int, steps: int) -> dict:
    import numpy as np
    import torch

    from workbench.training.losses import SegLoss
    from workbench.models.build import build_model, parameter_groups
    from workbench.data.preprocess import normalization_meta, to_tensor
    from workbench.core.runtime import autocast, resolve_device

    device = resolve_device(cfg["device"])
    model = build_model(cfg["arch"], cfg["encoder"], num_classes, "none", cfg["decoder_channels"], cfg["head_scale"]).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(parameter_groups(model, cfg["lr"], cfg["decoder_lr_mult"]), lr=cfg["lr"])
    loss_fn = SegLoss(cfg["loss"], num_classes, cfg["dice_weight"])
    norm = normalization_meta(cfg["normalization"])
    times: dict[str, list[float]] = {k: [] for k in ("encoder", "decoder+head", "loss", "backward", "optimizer")}
    for i in range(steps + 1):
        batch = batches[i % len(batches)]
        x, y = to_tensor(batch["image"], norm, device), batch["mask"].to(device)
        t = [time.perf_counter()]
        with autocast(device, cfg["precision"]):
            feats = model.encoder(x)
            t.append(time.perf_counter())
            logits = model.segmentation_head(model.decoder(feats))
            t.append(time.perf_counter())
        loss = loss_fn(logits, y)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if i:  # step 0 warms up oneDNN kernels
            for k, a, b in zip(times, t, t[1:]):
                times[k].append(b - a)
    n = len(batches[0]["image"])
    return {k: float(np.mean(v)) / n for k, v in times.items()}


@fail_cleanly
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m analysis.profile_training", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="recipe=NAME and key=value overrides, as for train.py")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--decoders", nargs="*", default=[], help="other decoder widths, e.g. 256,128 64,32")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    import torch
    from rich.console import Console
    from rich.table import Table

    from workbench.core import config
    from workbench.data.augment import build_train_transform
    from workbench.data.dataset import load_dataset
    from workbench.training.array_dataset import ArrayDataset

    cfg = config.resolve(args.overrides)
    ds = load_dataset(cfg["data"], cfg["image_size"])
    n = min(len(ds), cfg["batch_size"] * (args.steps + 1))
    data = ArrayDataset(ds.images[:n], ds.masks[:n], build_train_transform(cfg["augment"], ds.schema.flip_permutation,
                                                                            cfg["crop_size"]))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg["batch_size"], shuffle=False)
    t0 = time.perf_counter()
    batches = list(loader)
    load = (time.perf_counter() - t0) / n
    variants = [list(cfg["decoder_channels"])] + [[int(c) for c in d.split(",")] for d in args.decoders]
    table = Table(title=f"seconds per image of one training step, {cfg['arch']} / {cfg['encoder']}, "
                        f"{cfg['crop_size'] or cfg['image_size']} px, batch {cfg['batch_size']}, {torch.get_num_threads()} threads")
    parts = ["data+augment", "encoder", "decoder+head", "loss", "backward", "optimizer", "total"]
    table.add_column("decoder channels")
    for p in parts:
        table.add_column(p, justify="right")
    for dec in variants:
        t = profile_model(dict(cfg, decoder_channels=dec), batches, ds.schema.num_classes, args.steps)
        t = {"data+augment": load, **t}
        t["total"] = sum(t.values())
        table.add_row(str(dec or "smp default"), *[f"{t[p]:.3f}" for p in parts])
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
