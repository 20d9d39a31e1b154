"""The training loop shared by teachers (train.py) and the distilled student (distill.py).

A :class:`Trainer` trains one model on the in-RAM dataset, phase by phase (as nnU-Net's trainer):

    build()          model, augmented data loader, AdamW with warm-up + cosine schedule, loss
    resume()         continue after the last finished epoch of ``<out>/last.pt`` (if any)
    train_epoch(e)   one pass over the training images, every random stream re-seeded for epoch e
    validate(rec)    mIoU of the held-out fold at the masks' own resolution
    end_epoch(rec)   keep the best weights, checkpoint atomically, rewrite metrics.json (with the
                     run's provenance) and redraw progress.png
    export_oof()     plain and mirrored probabilities of the held-out fold (flip TTA), for
                     distillation and analysis
    export_model()   the best weights as a model file with metadata

:meth:`Trainer.fit` runs them in that order; kill it and run the same command: it resumes after the
last finished epoch and ends as an uninterrupted run would. :func:`fit` is the one-call form.
Started by torchrun it is one DDP run over several processes (:mod:`.distributed`); rank 0 writes.
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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..core import config as config_mod
from ..core import provenance
from ..core.atomic import remove_stale_temporaries
from ..core.console import console
from ..core.runtime import autocast, effective_precision
from ..data.augment import build_train_transform
from ..data.dataset import Dataset
from ..data.preprocess import normalization_meta, to_tensor
from ..evaluation.metrics import confusion_from_probs, iou_per_class
from ..exceptions import TrainingDivergedError
from ..inference import tta
from ..models.build import build_model, count_parameters, parameter_groups
from ..models.deep_supervision import aux_logits
from ..models.modelfile import model_metadata, save_model
from . import checkpoint, distributed
from .array_dataset import ArrayDataset, RowSubset, seed_worker
from .done import mark_done, reopen
from .history import draw_progress, epoch_line, run_metrics, validation_table, write_metrics
from .losses import SegLoss, deep_supervision_loss
from .oof import save_oof, to_uint8
from .warm_start import warm_start

MAX_NONFINITE_STEPS = 5  # consecutive non-finite losses/gradients before a run is declared diverged


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def reseed_epoch(epoch_seed: int, generator: torch.Generator, transform) -> None:
    """Re-seed every random stream of one epoch (global RNGs, the shuffling generator, the
    augmentation), so that a resumed run repeats an interrupted epoch exactly."""
    seed_everything(epoch_seed)
    generator.manual_seed(epoch_seed)
    if transform is not None:
        transform.set_random_seed(epoch_seed)


def supervised_loss(seg_loss, model: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor,
                    deep_supervision) -> tuple[torch.Tensor, torch.Tensor]:
    """The hard-label loss of a training step: (the main output's loss, the loss to optimise, which
    adds the deep-supervision heads' losses when ``deep_supervision`` weights are given)."""
    main = seg_loss(logits, target)
    if not deep_supervision:
        return main, main
    return main, deep_supervision_loss(seg_loss, main, aux_logits(model), target, deep_supervision)


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """One training run of the resolved config ``cfg`` on ``ds`` (train on ``train_idx``, validate
    and export OOF predictions on ``val_idx``; empty: train on everything, keep the last epoch).

    ``soft`` (N, S, S, C) soft labels (indexable by dataset row) and ``extra_loss(logits, batch,
    hard_loss) -> loss`` let distillation reuse the loop; ``valid_mask`` adds ``batch["valid"]`` (False
    on the padding of crops and rotations), for an ``extra_loss`` that computes targets on the batch;
    ``meta_extra`` is added to the model file's metadata.
    """

    def __init__(self, cfg: dict, ds: Dataset, train_idx, val_idx, soft=None, extra_loss: Callable | None = None,
                 meta_extra: dict | None = None, valid_mask: bool = False):
        self.cfg, self.ds = cfg, ds
        self.train_idx, self.val_idx = np.asarray(train_idx), np.asarray(val_idx)
        self.soft, self.extra_loss, self.meta_extra = soft, extra_loss, meta_extra or {}
        self.valid_mask = valid_mask
        self.out = Path(cfg["out"])
        self.schema = ds.schema
        self.norm = normalization_meta(cfg["normalization"])
        self.stop = False  # set when max_steps is reached
        self.nonfinite_steps = 0  # consecutive skipped (non-finite) steps, counted across epochs
        self.started, self.earlier_sessions = time.time(), []  # provenance: this session's start, earlier sessions

    # ------------------------------------------------------------------------------------ the run
    def fit(self) -> dict:
        """Train (or resume) to the end; returns the metrics also written to ``<out>/metrics.json``."""
        self.build()
        done = self.resume()
        if done is not None:
            return done
        for epoch in range(self.state["epoch"] + 1, self.cfg["epochs"] + 1):
            record = self.train_epoch(epoch)
            if len(self.val_idx) and (epoch % self.cfg["val_every"] == 0 or epoch == self.cfg["epochs"] or self.stop):
                self.validate(record)
            self.end_epoch(record)
            if self.stop:
                break
        return self.finish()

    # ------------------------------------------------------------------------------- the phases
    def build(self) -> None:
        """Model, data loader, optimiser, schedule and loss, seeded from ``cfg['seed']``."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out)  # what a killed run left half-written
        self.dist, self.device = distributed.setup(cfg["device"])  # one process unless started by torchrun
        if cfg["threads"] > 0:
            torch.set_num_threads(cfg["threads"])
        seed_everything(cfg["seed"])
        # with init_from the encoder's ImageNet weights would be overwritten at once: not loaded
        model = build_model(cfg["arch"], cfg["encoder"], self.schema.num_classes,
                            None if cfg["init_from"] else cfg["encoder_weights"],
                            cfg["decoder_channels"], cfg["head_scale"], len(cfg["deep_supervision"]))
        if cfg["init_from"]:  # progressive resizing: the weights of an earlier run (a resume then overrides them)
            self.meta_extra = dict(self.meta_extra, init_from=warm_start(model, cfg, self.schema,
                                                                           self.meta_extra.get("folds_file", "")))
        model = model.to(self.device)
        self.model = model.to(memory_format=torch.channels_last)
        self.net = self.dist.wrap(self.model)  # what train_step calls: the model, or its DDP wrapper
        self.n_params = count_parameters(self.model)
        console.print(f"[b]{escape(cfg['name'])}[/b] fold {cfg['fold']}: {escape(cfg['arch'])} / {escape(cfg['encoder'])} "
                      f"({self.n_params / 1e6:.2f} M parameters, {self.n_params * 4 / 2**20:.1f} MB fp32), "
                      f"{len(self.train_idx)} train / {len(self.val_idx)} val images at {cfg['image_size']} px"
                      + (f" (training on {cfg['crop_size']} px crops)" if cfg["crop_size"] else "")
                      + f" on {self.device}"
                      + (f", {self.dist.world_size} processes (DDP)" if self.dist.active else ""))

        ds, idx = self.ds, self.train_idx
        self.train_set = ArrayDataset(ds.images[idx], ds.masks[idx],
                                      build_train_transform(cfg["augment"], self.schema.flip_permutation,
                                                            cfg["crop_size"]),
                                      None if self.soft is None else RowSubset(self.soft, idx),
                                      valid=self.valid_mask)
        self.generator = torch.Generator().manual_seed(cfg["seed"])
        self.sampler = self.dist.sampler(self.train_set, cfg["seed"])  # this rank's share (None: one process)
        per_process = len(self.train_set) if self.sampler is None else len(self.sampler)
        self.loader = torch.utils.data.DataLoader(self.train_set, batch_size=cfg["batch_size"],
                                                  shuffle=self.sampler is None, sampler=self.sampler,
                                                  drop_last=per_process > cfg["batch_size"], generator=self.generator,
                                                  num_workers=cfg["workers"],
                                                  worker_init_fn=seed_worker if cfg["workers"] else None,
                                                  pin_memory=self.device.type == "cuda")
        self.steps_per_epoch = len(self.loader)
        total, warmup = self.steps_per_epoch * cfg["epochs"], int(cfg["warmup_epochs"] * self.steps_per_epoch)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, cfg["lr"], cfg["decoder_lr_mult"]),
                                           lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: warmup_cosine(s, total, warmup))
        self.seg_loss = SegLoss(cfg["loss"], self.schema.num_classes, cfg["dice_weight"])

    def resume(self) -> dict | None:
        """Load ``<out>/last.pt`` if there is one (refused if its config differs in a key that matters);
        returns the final metrics if that run had already finished, else None."""
        self.state = checkpoint.new_state()
        ckpt = checkpoint.load_checkpoint(self.out, self.cfg)
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.state = ckpt["state"]
            done = self.out / "metrics.json"
            if self.state["epoch"] >= self.cfg["epochs"] and done.exists() and json.loads(done.read_text()).get("finished"):
                console.print(f"{self.out} already finished {self.state['epoch']} epochs; nothing to do", markup=False)
                return json.loads(done.read_text())
            console.print(f"resuming from {self.out / checkpoint.LAST} after epoch {self.state['epoch']}", markup=False)
            self.earlier_sessions = provenance.earlier_sessions(self.out / "metrics.json")
        if self.dist.is_main:
            (self.out / "config.yaml").write_text(config_mod.dump(self.cfg))
            reopen(self.out)  # it trains on: not done (any more)
        self.best_state = checkpoint.load_best(self.out) or copy.deepcopy(self.model.state_dict())
        self.meta = dict(model_metadata(self.cfg, self.schema), **self.meta_extra)
        return None

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training images; returns the epoch's record (loss, lr, speed)."""
        cfg, state = self.cfg, self.state
        # Every random stream is re-seeded per epoch, so a resumed run repeats the interrupted epoch exactly.
        epoch_seed = self.dist.rank_seed(cfg["seed"] * 1000 + epoch)  # one process (and rank 0): seed*1000 + epoch
        reseed_epoch(epoch_seed, self.generator, self.train_set.transform)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.model.train()
        t0, losses, n_seen = time.time(), [], 0
        with Progress(TextColumn(f"epoch {epoch}/{cfg['epochs']}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("train", total=self.steps_per_epoch, loss=float("nan"))
            for batch in self.loader:
                loss = self.train_step(batch)
                if loss is not None:
                    self.nonfinite_steps = 0
                    losses.append(loss)
                else:  # the update was skipped; stop if it keeps happening
                    self.nonfinite_steps += 1
                    if self.nonfinite_steps >= MAX_NONFINITE_STEPS:
                        self.diverged(epoch, f"loss or gradient not finite for {self.nonfinite_steps} steps in a row")
                self.scheduler.step()
                state["step"] += 1
                n_seen += len(batch["image"])
                progress.update(task, advance=1, loss=float(np.mean(losses)) if losses else float("nan"))
                if cfg["max_steps"] and state["step"] >= cfg["max_steps"]:
                    self.stop = True
                    break
        if not losses:  # not one finite step in the epoch (a tiny dataset never reaches the count above)
            self.diverged(epoch, f"loss or gradient not finite in every step of the epoch ({self.nonfinite_steps} in a row)")
        seconds = time.time() - t0
        self.dist.sync_buffers(self.model)  # every rank now holds rank 0's weights
        train_loss, n_seen = self.dist.epoch_totals(losses, n_seen)
        return {"epoch": epoch, "train_loss": train_loss,
                "lr": self.scheduler.get_last_lr()[0], "seconds": round(seconds, 1),
                "images_per_s": round(n_seen / max(seconds, 1e-9), 2)}

    def train_step(self, batch: dict) -> float | None:
        """One optimiser step on ``batch``; returns its loss, or None when the loss or the gradient
        was not finite (the update is skipped then)."""
        device = self.device
        x = to_tensor(batch["image"], self.norm, device)
        y = batch["mask"].to(device, non_blocking=True)
        with autocast(device, self.cfg["precision"]):
            logits = self.net(x)
        _, loss = supervised_loss(self.seg_loss, self.model, logits, y, self.cfg["deep_supervision"])
        if self.extra_loss is not None:
            loss = self.extra_loss(logits, {k: v.to(device, non_blocking=True) for k, v in batch.items()}, loss)
        self.optimizer.zero_grad(set_to_none=True)
        finite = self.dist.all_true(bool(torch.isfinite(loss)))  # DDP: all ranks step or skip together
        if finite:
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
            finite = bool(torch.isfinite(grad_norm))
        if not finite:
            return None
        self.optimizer.step()
        return loss.item()

    def diverged(self, epoch: int, why: str):
        """Stop the run with :class:`TrainingDivergedError` (one ``error:`` line, exit status 2).
        Nothing of the diverged epoch is saved and no model file is written; ``last.pt`` still holds
        the last finished epoch, whose weights were finite (non-finite updates are never applied)."""
        raise TrainingDivergedError(
            f"{self.out}: training diverged at epoch {epoch}, step {self.state['step']}: {why} (lr={self.cfg['lr']}). "
            "Nothing of this epoch was saved and no model file was written; lower lr= and start a new out=..., "
            f"or resume from {self.out / checkpoint.LAST} (last finished epoch {self.state['epoch']}).")

    def validate(self, record: dict) -> None:
        """Add the held-out fold's mIoU and per-class IoU (no TTA) to the epoch's ``record``."""
        self.model.eval()
        idx = self.dist.shard(self.val_idx)  # DDP: this rank's images; confusion counts summed over ranks
        probs = tta.predict_arrays(self.model, self.ds.images[idx], self.norm, self.device,
                                   precision=self.cfg["precision"])
        if not self.dist.all_true(bool(torch.isfinite(torch.as_tensor(probs)).all())):
            self.diverged(record["epoch"], "the model's predictions on the held-out images are not finite")
        iou = iou_per_class(self.dist.sum(confusion_from_probs(probs, self.full_masks(idx), self.schema.num_classes)))
        record.update(val_miou=float(np.nanmean(iou)), val_iou=[None if not np.isfinite(v) else float(v) for v in iou])

    def end_epoch(self, record: dict) -> None:
        """Keep the best weights (among the validated epochs; the last epoch's without a held-out
        fold), checkpoint, metrics.json."""
        state = self.state
        if not len(self.val_idx):
            improved, score = True, -record["train_loss"]
        else:
            score = record.get("val_miou")
            improved = score is not None and score >= state["best_miou"]
        if improved:
            state["best_miou"], state["best_epoch"] = score, record["epoch"]
            self.best_state = copy.deepcopy(self.model.state_dict())
            if self.dist.is_main:
                checkpoint.save_best(self.out, self.best_state)
        state["epoch"] = record["epoch"]
        state["history"].append(record)
        console.print(epoch_line(record, state, self.cfg["epochs"]))
        if not self.dist.is_main:
            return  # only rank 0 writes files
        checkpoint.save_checkpoint(self.out, self.model, self.optimizer, self.scheduler, self.cfg, state)
        metrics = dict(run_metrics(self.cfg, state, self.n_params, self.schema, finished=False),
                       provenance=self.run_provenance())
        write_metrics(self.out, metrics)
        draw_progress(self.out, metrics)

    def finish(self) -> dict:
        """Best weights back in the model; validation table, OOF export, model file, final metrics."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        metrics = run_metrics(self.cfg, self.state, self.n_params, self.schema, finished=False)
        if not self.dist.is_main:
            return metrics  # only rank 0 exports and writes files
        if len(self.val_idx):
            console.print(validation_table(self.state, self.schema.names, self.cfg["fold"]))
        if len(self.val_idx) and self.cfg["save_oof"]:
            metrics["oof"] = self.export_oof()
        metrics["model_file"] = str(self.export_model(metrics))
        metrics["finished"] = self.state["epoch"] >= self.cfg["epochs"]
        metrics["provenance"] = self.run_provenance()
        write_metrics(self.out, metrics)
        if metrics["finished"]:
            mark_done(self.out, self.state["epoch"])  # the very last file: this run is done
        return metrics

    def export_oof(self) -> dict:
        """Write the held-out fold's probabilities and those of its mirrors (un-flipped, channel-
        permuted) as uint8 OOF files; returns their mIoU without and with flip TTA."""
        views = tta.predict_arrays(self.model, self.ds.images[self.val_idx], self.norm, self.device,
                                   flip_perm=self.schema.flip_permutation, precision=self.cfg["precision"], parts=True)
        plain, mirrored = views.plain.numpy(), views.mirrored.numpy()
        full, C = self.full_masks(), self.schema.num_classes
        iou_plain = iou_per_class(confusion_from_probs(plain, full, C))
        iou_tta = iou_per_class(confusion_from_probs(tta.merge_views(plain, mirrored), full, C))
        save_oof(self.out, [self.ds.stems[i] for i in self.val_idx], self.schema, self.cfg["image_size"],
                 self.cfg["fold"], to_uint8(plain), to_uint8(mirrored))
        oof = {"miou": float(np.nanmean(iou_plain)), "miou_tta": float(np.nanmean(iou_tta))}
        console.print(f"out-of-fold mIoU {oof['miou'] * 100:.2f}, with flip TTA {oof['miou_tta'] * 100:.2f}  "
                      f"-> {self.out}/oof_probs*.npy")
        return oof

    def export_model(self, metrics: dict) -> Path:
        """The model (best weights) as ``<out>/model.safetensors`` with its metadata and scores."""
        self.meta["metrics"] = {k: metrics[k] for k in ("val_miou", "oof", "best_epoch") if k in metrics}
        self.meta["provenance"] = self.run_provenance()
        path = self.out / "model.safetensors"
        size = save_model(path, self.model, self.meta)
        console.print(f"model file {path} ({size / 2**20:.1f} MB)")
        return path

    def run_provenance(self) -> dict:
        """Commit, library versions, hardware, command and wall time of this session (and the
        records of the sessions before a resume); see :mod:`workbench.core.provenance`."""
        return dict(provenance.collect(self.device, self.started, self.earlier_sessions),
                    precision=effective_precision(self.device, self.cfg["precision"]))

    def full_masks(self, idx=None) -> list[np.ndarray]:
        return [self.ds.full_masks[i] for i in (self.val_idx if idx is None else idx)]


def fit(cfg: dict, ds: Dataset, train_idx, val_idx, soft=None, extra_loss: Callable | None = None,
        meta_extra: dict | None = None, valid_mask: bool = False) -> dict:
    """Train one model (see :class:`Trainer`); returns the metrics also written to ``<out>/metrics.json``."""
    return Trainer(cfg, ds, train_idx, val_idx, soft, extra_loss, meta_extra, valid_mask).fit()
