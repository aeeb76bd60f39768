"""``dassl.engine`` trainers: the engine's ``TrainerBase``/``SimpleTrainer``/``TrainerX`` plus the Dassl
0.5.0 fork's ``prograd_backward_and_update`` and ``output_test`` (ProGrad, KgCoOp, TCP).

A foreign trainer keeps its hooks (``build_model``, ``forward_backward``, ``parse_batch_train``,
``load_model``, ``check_cfg``, ``model_inference``) and gets the engine's loop: LR stepped once per
epoch even when it calls ``update_lr()`` at the last batch, weights-only checksummed checkpoints,
SIGINT/SIGTERM safe stop, metrics.json, TensorBoard. Exact mid-epoch resume is offered only to a
trainer declared resumable (all its state in its registered models, :func:`is_resumable`); any other
trainer refuses to resume from a folder holding checkpoints, in one line.
"""
import os

import torch

from engine.checkpoint import CheckpointError, latest_checkpoint_path
from engine.resume_point import load_resume_point
from engine.trainer import SimpleTrainer as _EngineSimpleTrainer
from engine.trainer import TrainerBase as _EngineTrainerBase
from engine.trainer import TrainerX as _EngineTrainerX
from engine.utils import signals
from engine.utils.io import atomic_write_json

__all__ = ["TrainerBase", "SimpleTrainer", "TrainerX", "is_resumable", "RESUMABLE_TRAINERS"]

#: trainer class names whose whole training state lives in their registered models, optimisers and
#: schedulers (the official CoOp, CoCoOp, MaPLe, IVLP, VPT, COMMA, KgCoOp, ProGrad, TCP trainers);
#: the runner adds the names given with ``--resumable``. PromptSRC keeps its prompt aggregation on
#: the trainer and is not listed.
RESUMABLE_TRAINERS = {"CoOp", "CoCoOp", "MaPLe", "IVLP", "VPT", "COMMA", "KgCoOp", "ProGrad", "TCP"}


def is_resumable(trainer_or_class):
    """``RESUMABLE`` of the class when it sets one, else whether its name is in :data:`RESUMABLE_TRAINERS`."""
    cls = trainer_or_class if isinstance(trainer_or_class, type) else type(trainer_or_class)
    declared = getattr(cls, "RESUMABLE", None)
    if declared is not None:
        return bool(declared)
    return cls.__name__ in RESUMABLE_TRAINERS


class _ForkExtras:
    """Methods of the Dassl 0.5.0 fork (``Dassl.ProGrad.pytorch``), harmless for other repos."""

    def prograd_backward_and_update(self, loss_a, loss_b, lambda_=1, names=None):
        """ProGrad step: the gradient of ``loss_a`` loses its component against ``loss_b``'s gradient
        when they conflict (negative cosine): ``g_a - lambda_ * (g_a . g_b/|g_b|) g_b/|g_b|``."""
        self.model_zero_grad(names)
        names = self.get_model_names(names)
        self.detect_anomaly(loss_b)
        loss_b.backward(retain_graph=True)
        b_grads = []
        for name in names:
            for p in self._models[name].parameters():
                b_grads.append(None if p.grad is None else p.grad.clone())
        for name in names:
            if self._optims[name] is not None:
                self._optims[name].zero_grad()
        self.detect_anomaly(loss_a)
        loss_a.backward()
        grads = iter(b_grads)
        for name in names:
            for p in self._models[name].parameters():
                b_grad = next(grads)
                if b_grad is None or p.grad is None:
                    continue
                b_grad_norm = b_grad / torch.linalg.norm(b_grad)
                a_grad = p.grad.clone()
                a_grad_norm = a_grad / torch.linalg.norm(a_grad)
                if torch.dot(a_grad_norm.flatten(), b_grad_norm.flatten()) < 0:
                    p.grad = a_grad - lambda_ * torch.dot(a_grad.flatten(), b_grad_norm.flatten()) * b_grad_norm
        self.model_update(names)

    @torch.no_grad()
    def output_test(self, split=None):
        """``test`` that also writes ``OUTPUT_DIR/output.json``: ``{impath: {"predict": logits, "gt": label}}``."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        output_file = os.path.join(self.cfg.OUTPUT_DIR, "output.json")
        res_json = {}
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
            print(f"Do evaluation on {split} set")
        else:
            data_loader = self.test_loader
            print("Do evaluation on test set")
        for batch in data_loader:
            img_path = batch["impath"]
            input, label = self.parse_batch_test(batch)
            output = self.model_inference(input)
            self.evaluator.process(output, label)
            for i in range(len(img_path)):
                res_json[img_path[i]] = {"predict": output[i].float().cpu().numpy().tolist(),
                                         "gt": label[i].cpu().numpy().tolist()}
        atomic_write_json(output_file, res_json)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        return list(results.values())[0]


class _ResumePolicy:
    """Mid-epoch resume points only for resumable trainers; others refuse a folder with checkpoints."""

    def stop_if_requested(self, epochs_done, batches_done):
        if is_resumable(self) or signals.stop_requested() is None:
            return super().stop_if_requested(epochs_done, batches_done)
        signum = signals.stop_requested()
        where = f"epoch {epochs_done + 1}/{self.max_epoch}, batch {batches_done}/{self.num_batches}"
        raise signals.Interrupted(signum, where)

    def resume_model_if_exist(self, directory):
        if not is_resumable(self):
            names = self.get_model_names()
            found = [n for n in names if latest_checkpoint_path(os.path.join(directory, n)) is not None]
            if found or load_resume_point(directory, names, 0) is not None:
                raise CheckpointError(
                    f"{directory} holds checkpoints of {type(self).__name__}, which is not declared resumable "
                    f"(it may keep training state outside its registered models): remove them or choose another "
                    f"--output-dir, or declare it with train.py --dassl-repo PATH --resumable {type(self).__name__} --")
        return super().resume_model_if_exist(directory)


class TrainerBase(_ForkExtras, _EngineTrainerBase):
    """Dassl's ``TrainerBase`` (engine implementation) with the 0.5.0 fork's extras."""


class SimpleTrainer(_ResumePolicy, _ForkExtras, _EngineSimpleTrainer):
    """Dassl's ``SimpleTrainer`` (engine implementation)."""


class TrainerX(_ResumePolicy, _ForkExtras, _EngineTrainerX):
    """Dassl's ``TrainerX`` (engine implementation): one labelled loader, the engine's epoch loop."""
