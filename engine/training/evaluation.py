"""Evaluation of a trainer (Dassl's ``test``): the loop over the val/test loader under the trainer's
autocast, the result block, TensorBoard scalars, ``predictions.npz`` (``TEST.SAVE_PREDICTIONS``) and
``OUTPUT_DIR/metrics.json``."""
import os
import time

import numpy as np
import torch

from engine.distributed import is_main_process
from engine.runs.run_metrics import write_run_metrics
from engine.training import progress
from engine.utils.io import atomic_save_npz
from engine.utils.logger import get_logger

__all__ = ["EvaluationMixin"]

logger = get_logger()


class EvaluationMixin:
    """``test`` and its hooks for ``SimpleTrainer`` (uses ``cfg``, ``evaluator``, the loaders)."""

    def before_evaluation(self):
        """Hook called at the start of every ``test()`` (e.g. cache the class text features)."""

    def after_evaluation(self):
        """Hook called at the end of every ``test()`` (drop what ``before_evaluation`` cached)."""

    @torch.no_grad()
    def test(self, split=None):
        """Evaluate on ``split`` ("val" if it exists and is asked for, else "test"); returns accuracy.

        Rank 0 only in a distributed run: the other ranks return None at once."""
        if not is_main_process():
            return None
        self.set_model_mode("eval")
        self.evaluator.reset()
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split = "test"
            data_loader = self.test_loader
        logger.info(f"Evaluate on the *{split}* set")
        save_preds = self.cfg.TEST.SAVE_PREDICTIONS and split == "test"
        impaths, labels, logits = [], [], []
        eval_start = time.time()
        self.before_evaluation()
        try:
            for batch in progress.progress(data_loader, f"test ({split})"):
                input, label = self.parse_batch_test(batch)
                with self.autocast():
                    output = self.model_inference(input)
                self.evaluator.process(output, label)
                if save_preds:
                    impaths.extend(str(p) for p in batch["impath"])
                    labels.append(label.detach().cpu().long())
                    logits.append(output.detach().float().cpu())
        finally:
            self.after_evaluation()
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.global_step())
        if save_preds:
            self._save_predictions(impaths, labels, logits)
        if split == "test":
            write_run_metrics(self, results, time.time() - eval_start)  # OUTPUT_DIR/metrics.json
            if self._writer is not None:
                self._writer.add_hparams(self.cfg, {f"hparam/{k}": v for k, v in results.items()})
        return list(results.values())[0]

    def _save_predictions(self, impaths, labels, logits):
        path = os.path.join(self.output_dir, "predictions.npz")
        atomic_save_npz(
            path,
            impath=np.asarray(impaths, dtype=np.str_),
            label=torch.cat(labels).numpy().astype(np.int64) if labels else np.zeros(0, np.int64),
            logits=torch.cat(logits).numpy().astype(np.float32) if logits else np.zeros((0, 0), np.float32),
        )
        logger.info(f"Predictions saved to {path}")
