"""The hand-made mutations of docs/testing.md: each is applied alone to a scratch checkout, the named
test files run (``pytest -x``), the file is restored, and one JSON line per mutation says which test
caught it. Never run it on a working tree you care about: it rewrites source files while it runs.

    git worktree add /tmp/mut HEAD --detach && ln -s "$PWD/.venv" /tmp/mut/.venv
    nice -n 19 .venv/bin/python docs/hand_mutations.py /tmp/mut [ID ...] > mutations.jsonl
    git worktree remove --force /tmp/mut
"""
import json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else None
T = "workbench/training/trainer.py"
M = [
 # id, file, old, new, tests
 ("resume: model state not restored", T, '            self.model.load_state_dict(ckpt["model"])\n', '', "tests/test_training.py"),
 ("resume: optimizer state not restored", T, '            self.optimizer.load_state_dict(ckpt["optimizer"])\n', '', "tests/test_training.py"),
 ("resume: scheduler state not restored", T, '            self.scheduler.load_state_dict(ckpt["scheduler"])\n', '', "tests/test_training.py"),
 ("resume: RNG streams not restored (no per-epoch re-seeding at all)", T,
  '        reseed_epoch(epoch_seed, self.generator, self.train_set.transform)\n',
  '', "tests/test_training.py"),
 ("resume: shuffling generator not re-seeded", T, '    generator.manual_seed(epoch_seed)\n', '', "tests/test_training.py"),
 ("resume: augmentation RNG not re-seeded", T, '        transform.set_random_seed(epoch_seed)\n', '        pass\n', "tests/test_training.py"),
 ("resume: global torch/numpy/random RNG not re-seeded", T, '    seed_everything(epoch_seed)\n', '', "tests/test_training.py"),
 ("Predictor.cleanup a no-op", "workbench/inference/predictor.py", 'return postprocess(probs, self.exclusive, self.min_area)', 'return probs', "tests/test_cleanup.py"),
 ("inference.py batch pipeline skips the cleanup", "workbench/inference/batch_pipeline.py", 'p = self.predictor.cleanup(p)', 'p = p', "tests/test_cleanup.py"),
 ("flip TTA un-flips without the channel permutation (all callers)", "workbench/inference/tta.py", 'return probs_of_mirror.flip(-1)[:, perm]', 'return probs_of_mirror.flip(-1)', "tests/test_tta.py"),
 ("flip TTA does not un-flip the mirror's prediction", "workbench/inference/tta.py", 'return probs_of_mirror.flip(-1)[:, perm]', 'return probs_of_mirror[:, perm]', "tests/test_tta.py"),
 ("soft labels: flip TTA without the permutation", "workbench/distillation/soft_labels.py", 'acc = ensemble_probs(models, images, ds.schema.flip_permutation, device)', 'acc = ensemble_probs(models, images, np.arange(ds.schema.num_classes), device)', "tests/test_tta.py"),
 ("rebuilt teacher OOF: flip TTA without the permutation", "workbench/distillation/teachers.py", 'flip_perm=ds.schema.flip_permutation', 'flip_perm=np.arange(ds.schema.num_classes)', "tests/test_tta.py"),
 ("training OOF export: flip TTA without the permutation", T, 'flip_perm=self.schema.flip_permutation, precision', 'flip_perm=np.arange(self.schema.num_classes), precision', "tests/test_tta.py"),
 ("Predictor: flip TTA without the permutation", "workbench/inference/predictor.py", 'self.flip_perm = self.schema.flip_permutation', 'self.flip_perm = np.arange(self.schema.num_classes)', "tests/test_tta.py"),
 ("flip consistency: without the permutation", "workbench/evaluation/flip_consistency.py", 'perm = ClassSchema.from_dict(meta["schema"]).flip_permutation', 'perm = np.arange(len(meta["schema"]["classes"]))', "tests/test_tta.py"),
 ("training flip: mask flipped without swapping labels", "workbench/data/augment.py", 'return np.ascontiguousarray(self._lut[mask])', 'return np.ascontiguousarray(mask)', "tests/test_augment.py"),
 ("training flip: soft-label channels not permuted", "workbench/data/augment.py", 'return np.ascontiguousarray(mask[..., self.flip_perm])', 'return np.ascontiguousarray(mask)', "tests/test_augment.py"),
 ("training flip: plain albumentations HorizontalFlip", "workbench/data/augment.py", 'ops = [HorizontalFlipSwap(flip_perm, p=0.5)]', 'ops = [A.HorizontalFlip(p=0.5)]', "tests/test_augment.py"),
 ("Trainer: augmentation built with an identity permutation", T, 'build_train_transform(cfg["augment"], self.schema.flip_permutation,', 'build_train_transform(cfg["augment"], np.arange(self.schema.num_classes),', "tests/test_augment.py"),
 ("KD term removed from the student's loss (make_kd_loss)", "workbench/distillation/student.py", 'return kd_weight * distil(logits, soft, temperature) + hard_weight * hard', 'return hard_weight * hard', "tests/test_losses.py tests/test_training.py"),
 ("KD hook not passed by train_student", "workbench/distillation/student.py", 'soft=soft, extra_loss=make_kd_loss(**kd), meta_extra', 'soft=soft, extra_loss=None, meta_extra', "tests/test_losses.py tests/test_training.py"),
 ("Trainer ignores the extra (KD) loss", T, '            loss = self.extra_loss(logits, {k: v.to(device, non_blocking=True) for k, v in batch.items()}, loss)\n', '            pass\n', "tests/test_training.py"),
 ("kd_loss: no T^2 factor", "workbench/training/losses.py", 'return kl[valid].mean() * temperature**2', 'return kl[valid].mean()', "tests/test_losses.py"),
 ("kd_loss: student not tempered", "workbench/training/losses.py", 'log_s = F.log_softmax(student_logits.float() / temperature, 1)', 'log_s = F.log_softmax(student_logits.float(), 1)', "tests/test_losses.py"),
 ("kd_loss: teacher not tempered", "workbench/training/losses.py", 'teacher_probs.clamp_min(1e-12)) / temperature, 1)', 'teacher_probs.clamp_min(1e-12)), 1)', "tests/test_losses.py"),
 ("kd_loss: padded pixels averaged in", "workbench/training/losses.py", 'return kl[valid].mean() * temperature**2', 'return kl.mean() * temperature**2', "tests/test_losses.py"),
 ("kd_loss: KL direction reversed", "workbench/training/losses.py", 'kl = (log_t.exp() * (log_t - log_s)).sum(1)', 'kl = (log_s.exp() * (log_s - log_t)).sum(1)', "tests/test_losses.py"),
 ("fit_weights: scored without flip TTA", "workbench/distillation/ensemble.py", 'score = np.nanmean(evaluate_mix(oofs, w, tta=True, full_res=False))', 'score = np.nanmean(evaluate_mix(oofs, w, tta=False, full_res=False))', "tests/test_distill_choices.py"),
 ("fit_weights: equal weights", "workbench/distillation/ensemble.py", '    if len(groups) == 1:\n        return {groups[0]: 1.0}\n', '    return {g: 1.0 / len(groups) for g in groups}\n', "tests/test_distill_choices.py"),
 ("fit_weights: keeps the worst mix", "workbench/distillation/ensemble.py", '        if score > best:\n            best, best_w = score, w', '        if score < -best or best_w is None:\n            best, best_w = -score, w', "tests/test_distill_choices.py"),
 ("choose_postprocessing: TTA decision inverted", "workbench/distillation/postprocessing.py", 'use_tta = bool(np.nanmean(tta) >= np.nanmean(plain))', 'use_tta = bool(np.nanmean(tta) < np.nanmean(plain))', "tests/test_distill_choices.py"),
 ("choose_postprocessing: always TTA", "workbench/distillation/postprocessing.py", 'use_tta = bool(np.nanmean(tta) >= np.nanmean(plain))', 'use_tta = True', "tests/test_distill_choices.py"),
 ("choose_postprocessing: keeps a threshold that does not help", "workbench/distillation/postprocessing.py", 'if np.isfinite(gain) and gain > best_gain + 1e-4:', 'if np.isfinite(gain):', "tests/test_distill_choices.py"),
 ("choose_postprocessing: largest threshold that helps (not the best)", "workbench/distillation/postprocessing.py", 'if np.isfinite(gain) and gain > best_gain + 1e-4:', 'if np.isfinite(gain) and gain > 1e-4:', "tests/test_distill_choices.py"),
 ("choose_postprocessing: no cleanup ever chosen", "workbench/distillation/postprocessing.py", '        chosen[names[c]], gains[names[c]] = best_t, best_gain', '        gains[names[c]] = best_gain', "tests/test_distill_choices.py"),
 ("soft-label cache key ignores the teacher file's content", "workbench/distillation/soft_labels.py", '"teachers": sorted((t.label, file_digest(t.model_file)) for t in teachers)', '"teachers": sorted((t.label, str(t.model_file)) for t in teachers)', "tests/test_distill_choices.py"),
 ("OOF cache never rebuilt for a changed teacher file", "workbench/distillation/teachers.py", '        if made_from is None or made_from == digest:', '        if True:', "tests/test_distill_choices.py"),
 ("CE+Dice: Dice weight ignored", "workbench/training/losses.py", 'loss = loss + self.dice_weight * multiclass_dice_loss(log_probs.exp(), target)', 'loss = loss + multiclass_dice_loss(log_probs.exp(), target)', "tests/test_losses.py"),
 ("CE+Dice: Dice term dropped", "workbench/training/losses.py", 'loss = loss + self.dice_weight * multiclass_dice_loss(log_probs.exp(), target)', 'loss = loss', "tests/test_losses.py"),
 ("Dice: absent classes count", "workbench/training/losses.py", 'return ((1 - score) * (count > 0)).mean()', 'return (1 - score).mean()', "tests/test_losses.py"),
 ("BCE+Dice: Dice weight ignored", "workbench/training/losses.py", 'return self.bce(logits, onehot) + self.dice_weight * self.dice(logits, onehot)', 'return self.bce(logits, onehot) + self.dice(logits, onehot)', "tests/test_losses.py"),
 ("LR schedule: warm-up off by one", T, 'return (step + 1) / max(1, warmup)', 'return step / max(1, warmup)', "tests/test_training.py"),
 ("LR schedule: linear instead of cosine decay", T, 'return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))', 'return 1.0 - min(1.0, progress)', "tests/test_training.py"),
 ("LR schedule: scheduler stepped once per epoch", T, '                self.scheduler.step()\n', '', "tests/test_training.py"),
 ("LR schedule: decoder LR multiplier ignored", "workbench/models/build.py", '{"params": rest, "lr": lr * decoder_lr_mult, "name": "decoder"}', '{"params": rest, "lr": lr, "name": "decoder"}', "tests/test_training.py"),
 ("merge_exclusive: the group goes to its smaller member", "workbench/inference/postprocess.py", 'keep = group[int(counts.argmax())]', 'keep = group[int(counts.argmin())]', "tests/test_cleanup.py"),
 ("Predictor ignores the file's exclusive groups", "workbench/inference/predictor.py", 'postprocess(probs, self.exclusive, self.min_area)', 'postprocess(probs, [], self.min_area)', "tests/test_cleanup.py"),
 ("choose_exclusive: each fold decided on itself, not on the others", "workbench/distillation/postprocessing.py", 'others = folds != f', 'others = folds == f', "tests/test_distill_choices.py"),
 ("choose_exclusive: a group that costs is kept", "workbench/distillation/postprocessing.py", 'if gain > 1e-4:', 'if True:', "tests/test_distill_choices.py"),
 ("exclusive_candidates: a group two parts of which share a mask is tried", "workbench/distillation/postprocessing.py", '        if shared:\n', '        if False:\n', "tests/test_distill_choices.py"),
 ("analysis.postprocessing ignores the file's exclusive groups", "analysis/postprocessing.py", 'exclusive = meta.get("exclusive") or []', 'exclusive = []', "tests/test_analysis.py"),
 ("update_metadata: tensors rewritten in float32", "workbench/models/modelfile.py", '        state = load_file(str(path))\n    except (SafetensorError, OSError) as err:\n        raise ModelFileError(f"{path}: unreadable', '        state = {k: v.float() for k, v in load_file(str(path)).items()}\n    except (SafetensorError, OSError) as err:\n        raise ModelFileError(f"{path}: unreadable', "tests/test_distill.py -k postprocess"),
 ("distill.py --postprocess: --dry-run writes the file anyway", "workbench/distillation/retune.py", '    if dry_run:\n        console.print', '    if False:\n        console.print', "tests/test_distill.py -k postprocess"),
 ("distill.py --postprocess: two runs of one fold accepted", "workbench/distillation/retune.py", '        if shared:\n', '        if False:\n', "tests/test_distill.py -k postprocess"),
 ("distill.py --postprocess: runs of another architecture accepted", "workbench/distillation/retune.py", '        if differ:\n', '        if False:\n', "tests/test_distill.py -k postprocess"),
 ("analysis.postprocessing: the cross-fitted rule ignores the file's exclusive groups", "analysis/postprocessing.py", 'cross_post = post_of(cross_choice["cleanup"]["min_area"], cross_choice["exclusive"])', 'cross_post = post_of(cross_choice["cleanup"]["min_area"], [])', "tests/test_analysis.py -k exclusive"),
 ("init_from: the fold check skipped (a final model may start a fold run)", "workbench/training/warm_start.py", '    if fold != their_fold:\n', '    if False:\n', "tests/test_training.py -k warm_start"),
 ("init_from: the weights never loaded", "workbench/training/warm_start.py", '    missing, unexpected = model.load_state_dict(state, strict=False)\n', '    missing, unexpected = [], []\n', "tests/test_training.py -k warm_start"),
 ("init_from: ignored by the Trainer", "workbench/training/trainer.py", '        if cfg["init_from"]:', '        if False:', "tests/test_training.py -k warm_start"),
 ("distill.py: postprocess=false ignored (the choice runs anyway)", "workbench/distillation/pipeline.py", '    if cfg["postprocess"]:\n', '    if True:\n', "tests/test_distill.py -k postprocess_false"),
 ("analysis.postprocessing: the file's column always with flip TTA", "analysis/postprocessing.py", 'cms["tta_file_cleanup"] = with_post(file_tta, post)', 'cms["tta_file_cleanup"] = with_post(True, post)', "tests/test_analysis.py -k postprocessing_ablation"),
]

def run(only=None):
    results = []
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    for i, (name, f, old, new, tests) in enumerate(M):
        if only is not None and i not in only:
            continue
        path = ROOT / f
        src = path.read_text()
        assert src.count(old) == 1, (name, src.count(old))
        path.write_text(src.replace(old, new))
        t0 = time.time()
        try:
            r = subprocess.run(["nice", "-n", "19", ".venv/bin/python", "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests.split()],
                               cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200)
            failed = [l.split(" ")[1] for l in r.stdout.splitlines() if l.startswith("FAILED") or l.startswith("ERROR")]
            res = {"id": i, "mutation": name, "file": f, "rc": r.returncode, "caught_by": failed, "s": round(time.time() - t0)}
        finally:
            path.write_text(src)
        print(json.dumps(res), flush=True)
        results.append(res)
    return results

if __name__ == "__main__":
    if ROOT is None or ROOT == Path(__file__).resolve().parents[1]:
        sys.exit("usage: hand_mutations.py SCRATCH_CHECKOUT [ID ...]  (not this working tree)")
    run(set(map(int, sys.argv[2:])) or None)
