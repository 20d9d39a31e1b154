"""The training loop shared by teachers (train.py) and the distilled student (distill.py).

One call of :func:`fit` trains one model on the in-RAM dataset, validates every epoch on the held-out
fold at the masks' own resolution, keeps the best weights as a model file, checkpoints every epoch
atomically (kill it and run the same command: it resumes after the last finished epoch), and at the
end writes the held-out fold's out-of-fold probabilities.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import config as config_mod
from .augment import build_train_transform
from .data import Dataset
from .exceptions import TrainingDivergedError
from .losses import SegLoss
from .metrics import confusion_matrix, iou_per_class
from .modelfile import atomic_write, save_model
from .models import build_model, count_parameters, parameter_groups
from .oof import save_oof, to_uint8
from .preprocess import normalization_meta, to_tensor
from .runtime import autocast, resolve_device
from .tta import unflip_probs

console = Console()
MAX_NONFINITE_STEPS = 5  # consecutive non-finite losses/gradients before a run is declared diverged

# Keys that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "threads", "device", "max_steps", "save_oof", "recipe",
                     "export", "export_dtype", "family_max_gap"}  # the last three only matter after training


def config_changes(old: dict, new: dict) -> list[str]:
    """Keys whose change forbids resuming a checkpoint written with config ``old``. A key that the
    checkpoint's code did not know yet counts as unchanged while it holds its default value."""
    diff = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_CHANGES:
            continue
        default = config_mod.DEFAULTS.get(key)
        before = old.get(key, default)
        if before != new.get(key, default):
            diff.append(key)
    return diff


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ArrayDataset(torch.utils.data.Dataset):
    """Images/masks already in RAM (N, S, S, 3) / (N, S, S); optional soft labels (N, S, S, C) uint8."""

    def __init__(self, images, masks, transform=None, soft=None):
        self.images, self.masks, self.transform, self.soft = images, masks, transform, soft

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        item = {"image": self.images[i], "mask": self.masks[i]}
        if self.soft is not None:
            item["soft"] = np.array(self.soft[i])  # copy: rows of a read-only memory map
        if self.transform is not None:
            item = self.transform(**item)
        out = {"image": torch.from_numpy(np.ascontiguousarray(item["image"])),
               "mask": torch.from_numpy(np.ascontiguousarray(item["mask"])).long()}
        if self.soft is not None:
            out["soft"] = torch.from_numpy(np.ascontiguousarray(item["soft"]))
        return out


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def model_metadata(cfg: dict, ds: Dataset) -> dict:
    return {
        "arch": cfg["arch"], "encoder": cfg["encoder"], "decoder_channels": list(cfg.get("decoder_channels") or []),
        "schema": ds.schema.to_dict(),
        "input_size": [cfg["image_size"], cfg["image_size"]],
        "normalization": normalization_meta(cfg["normalization"]), "resize": "squash",
        "tta": {"hflip": True, "scales": [1.0]}, "cleanup": {"enabled": False, "min_area": {}},
        "name": cfg["name"], "family": cfg["family"], "fold": cfg["fold"], "recipe": cfg,
    }


@torch.inference_mode()
def predict_set(model, images: np.ndarray, cfg: dict, device, flip_perm=None, batch_size: int = 16):
    """Softmax probabilities (N, C, S, S) float32 on CPU; of the mirrored images un-flipped if ``flip_perm``."""
    norm = normalization_meta(cfg["normalization"])
    out = []
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i:i + batch_size], norm, device)
        if flip_perm is not None:
            x = x.flip(-1)
        with autocast(device, cfg["precision"]):
            logits = model(x)
        p = logits.float().softmax(1)
        out.append((unflip_probs(p, flip_perm) if flip_perm is not None else p).cpu())
    return torch.cat(out) if out else torch.empty(0)


def evaluate_probs(probs, full_masks: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Confusion matrix of argmax(probs upsampled to each mask's resolution) vs the masks."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, gt in zip(probs, full_masks):
        p = torch.as_tensor(p).float()[None]
        if p.shape[-2:] != gt.shape:
            p = F.interpolate(p, size=gt.shape, mode="bilinear", align_corners=False)
        cm += confusion_matrix(gt, p[0].argmax(0), num_classes)
    return cm


def per_class_table(names, columns: dict[str, np.ndarray], title: str) -> Table:
    table = Table(title=title)
    table.add_column("class")
    for col in columns:
        table.add_column(col, justify="right")
    for i, n in enumerate(names):
        table.add_row(n, *[f"{v[i] * 100:.1f}" if np.isfinite(v[i]) else "-" for v in columns.values()])
    table.add_row("[b]mIoU[/b]", *[f"[b]{np.nanmean(v) * 100:.1f}[/b]" for v in columns.values()])
    return table


def fit(cfg: dict, ds: Dataset, train_idx: np.ndarray, val_idx: np.ndarray, soft=None,
        extra_loss: Callable | None = None, meta_extra: dict | None = None) -> dict:
    """Train one model; returns the metrics dict also written to ``<out>/metrics.json``.

    ``soft`` (N, S, S, C) uint8 soft labels and ``extra_loss(logits, batch, hard_loss) -> loss``
    let distillation reuse this loop.
    """
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg["device"])
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    schema, C = ds.schema, ds.schema.num_classes
    flip_perm = schema.flip_permutation
    seed_everything(cfg["seed"])

    model = build_model(cfg["arch"], cfg["encoder"], C, cfg["encoder_weights"], cfg["decoder_channels"]).to(device)
    model = model.to(memory_format=torch.channels_last)
    n_params = count_parameters(model)
    console.print(f"[b]{cfg['name']}[/b] fold {cfg['fold']}: {cfg['arch']} / {cfg['encoder']} "
                  f"({n_params / 1e6:.2f} M parameters, {n_params * 4 / 2**20:.1f} MB fp32), "
                  f"{len(train_idx)} train / {len(val_idx)} val images at {cfg['image_size']} px"
                  + (f" (training on {cfg['crop_size']} px crops)" if cfg["crop_size"] else "") + f" on {device}")

    train_set = ArrayDataset(ds.images[train_idx], ds.masks[train_idx],
                             build_train_transform(cfg["augment"], flip_perm, cfg["crop_size"]),
                             None if soft is None else _Subset(soft, train_idx))
    g = torch.Generator().manual_seed(cfg["seed"])
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg["batch_size"], shuffle=True,
                                         drop_last=len(train_set) > cfg["batch_size"], generator=g)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg["epochs"]
    warmup = int(cfg["warmup_epochs"] * steps_per_epoch)
    opt = torch.optim.AdamW(parameter_groups(model, cfg["lr"], cfg["decoder_lr_mult"]), lr=cfg["lr"],
                            weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warmup))
    seg_loss = SegLoss(cfg["loss"], C, cfg["dice_weight"])
    norm = normalization_meta(cfg["normalization"])

    state = {"epoch": 0, "step": 0, "best_miou": -1.0, "best_epoch": 0, "history": []}
    ckpt_path = out / "last.pt"
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        diff = config_changes(ckpt["config"], cfg)
        if diff:
            raise config_mod.ConfigError(f"{out} holds a checkpoint of a different config (differs in {diff}); "
                                         "use another out=... or delete the folder")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        state = json.loads(ckpt["state"])
        done = out / "metrics.json"
        if state["epoch"] >= cfg["epochs"] and done.exists() and json.loads(done.read_text()).get("finished"):
            console.print(f"{out} already finished {state['epoch']} epochs; nothing to do")
            return json.loads(done.read_text())
        console.print(f"resuming from {ckpt_path} after epoch {state['epoch']}")
    (out / "config.yaml").write_text(config_mod.dump(cfg))
    best_state = copy.deepcopy(model.state_dict())
    if (out / "best_state.pt").exists():
        best_state = torch.load(out / "best_state.pt", map_location="cpu", weights_only=True)

    meta = dict(model_metadata(cfg, ds), **(meta_extra or {}))
    stop = False
    for epoch in range(state["epoch"] + 1, cfg["epochs"] + 1):
        # Every random stream is re-seeded per epoch, so a resumed run repeats the interrupted epoch exactly.
        epoch_seed = cfg["seed"] * 1000 + epoch
        seed_everything(epoch_seed)
        g.manual_seed(epoch_seed)
        if train_set.transform is not None:
            train_set.transform.set_random_seed(epoch_seed)
        model.train()
        t0, losses, bad_steps, n_seen = time.time(), [], 0, 0
        with Progress(TextColumn(f"epoch {epoch}/{cfg['epochs']}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("train", total=steps_per_epoch, loss=float("nan"))
            for batch in loader:
                x = to_tensor(batch["image"], norm, device)
                y = batch["mask"].to(device)
                with autocast(device, cfg["precision"]):
                    logits = model(x)
                loss = seg_loss(logits, y)
                if extra_loss is not None:
                    loss = extra_loss(logits, {k: v.to(device) for k, v in batch.items()}, loss)
                opt.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(loss))
                if finite:
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
                    finite = bool(torch.isfinite(grad_norm))
                if finite:
                    opt.step()
                    bad_steps = 0
                    losses.append(loss.item())
                else:  # skip the update; stop if it keeps happening
                    bad_steps += 1
                    if bad_steps >= MAX_NONFINITE_STEPS:
                        raise TrainingDivergedError(
                            f"{out}: training diverged at epoch {epoch}, step {state['step'] + 1}: loss or gradient "
                            f"not finite for {bad_steps} steps in a row (lr={cfg['lr']}). Nothing of this epoch was "
                            f"saved; lower lr= and start a new out=..., or resume from {ckpt_path} (last finished "
                            f"epoch {state['epoch']}).")
                sched.step()
                state["step"] += 1
                n_seen += len(x)
                progress.update(task, advance=1, loss=float(np.mean(losses)) if losses else float("nan"))
                if cfg["max_steps"] and state["step"] >= cfg["max_steps"]:
                    stop = True
                    break
        seconds = time.time() - t0
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                  "lr": sched.get_last_lr()[0], "seconds": round(seconds, 1),
                  "images_per_s": round(n_seen / max(seconds, 1e-9), 2)}
        if len(val_idx):
            model.eval()
            probs = predict_set(model, ds.images[val_idx], cfg, device)
            cm = evaluate_probs(probs, [ds.full_masks[i] for i in val_idx], C)
            iou = iou_per_class(cm)
            record.update(val_miou=float(np.nanmean(iou)), val_iou=[None if not np.isfinite(v) else float(v) for v in iou])
            score = record["val_miou"]
        else:
            score = -record["train_loss"]  # no held-out data (final student): keep the last epoch
        if score >= state["best_miou"] or not len(val_idx):
            state["best_miou"], state["best_epoch"] = score, epoch
            best_state = copy.deepcopy(model.state_dict())
            atomic_write(out / "best_state.pt", lambda p: torch.save(best_state, p))
        state["epoch"] = epoch
        state["history"].append(record)
        line = f"epoch {epoch:>3}/{cfg['epochs']}  loss {record['train_loss']:.4f}"
        if "val_miou" in record:
            line += f"  val mIoU {record['val_miou'] * 100:5.1f}  (best {state['best_miou'] * 100:.1f} @ {state['best_epoch']})"
        console.print(line + f"  lr {record['lr']:.2e}  {record['seconds']:.0f}s")
        ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "config": cfg, "state": json.dumps(state)}
        atomic_write(ckpt_path, lambda p: torch.save(ckpt, p))
        write_metrics(out, run_metrics(cfg, state, n_params, schema, finished=False))
        if stop:
            break

    model.load_state_dict(best_state)
    model.eval()
    metrics = run_metrics(cfg, state, n_params, schema, finished=False)
    if len(val_idx):
        best = state["history"][state["best_epoch"] - 1]
        columns = {f"best (ep {state['best_epoch']})": np.array(best["val_iou"], dtype=float)}
        if state["best_epoch"] != state["epoch"]:
            columns[f"last (ep {state['epoch']})"] = np.array(state["history"][-1]["val_iou"], dtype=float)
        console.print(per_class_table(schema.names, columns, f"validation IoU (%), fold {cfg['fold']}"))
    if len(val_idx) and cfg["save_oof"]:
        images = ds.images[val_idx]
        plain = predict_set(model, images, cfg, device).numpy()
        mirrored = predict_set(model, images, cfg, device, flip_perm=flip_perm).numpy()
        full = [ds.full_masks[i] for i in val_idx]
        iou_plain = iou_per_class(evaluate_probs(plain, full, C))
        iou_tta = iou_per_class(evaluate_probs((plain + mirrored) / 2, full, C))
        save_oof(out, [ds.stems[i] for i in val_idx], schema, cfg["image_size"], cfg["fold"],
                 to_uint8(plain), to_uint8(mirrored))
        metrics["oof"] = {"miou": float(np.nanmean(iou_plain)), "miou_tta": float(np.nanmean(iou_tta))}
        console.print(f"out-of-fold mIoU {metrics['oof']['miou'] * 100:.2f}, with flip TTA "
                      f"{metrics['oof']['miou_tta'] * 100:.2f}  -> {out}/oof_probs*.npy")
    meta["metrics"] = {k: metrics[k] for k in ("val_miou", "oof", "best_epoch") if k in metrics}
    size = save_model(out / "model.safetensors", model, meta)
    console.print(f"model file {out / 'model.safetensors'} ({size / 2**20:.1f} MB)")
    metrics["model_file"] = str(out / "model.safetensors")
    metrics["finished"] = state["epoch"] >= cfg["epochs"]
    write_metrics(out, metrics)
    return metrics


def run_metrics(cfg: dict, state: dict, n_params: int, schema, finished: bool) -> dict:
    """What ``metrics.json`` holds; written after every epoch (``finished`` false) and at the end."""
    metrics = {"name": cfg["name"], "family": cfg["family"], "recipe": cfg.get("recipe", ""), "fold": cfg["fold"],
               "arch": cfg["arch"], "encoder": cfg["encoder"], "image_size": cfg["image_size"],
               "crop_size": cfg["crop_size"], "epochs_planned": cfg["epochs"], "best_epoch": state["best_epoch"],
               "epochs_done": state["epoch"], "history": state["history"], "parameters": n_params,
               "train_minutes": round(sum(h["seconds"] for h in state["history"]) / 60, 2), "finished": finished}
    best = [h for h in state["history"] if h["epoch"] == state["best_epoch"]]
    if best and "val_miou" in best[0]:
        metrics.update(val_miou=best[0]["val_miou"], val_iou=dict(zip(schema.names, best[0]["val_iou"])))
    return metrics


def write_metrics(out: Path, metrics: dict) -> None:
    atomic_write(out / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=1)))


class _Subset:
    """Lazy row selection of a (memory-mapped) array, so soft labels are never copied whole."""

    def __init__(self, array, idx):
        self.array, self.idx = array, np.asarray(idx)

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.array[self.idx[i]]
