"""``Classification`` evaluator (Dassl ``dassl.evaluation``): argmax accuracy, error, macro-F1.

``evaluate()`` returns an ordered dict ``accuracy`` (first: the number ``test()`` returns),
``error_rate``, ``macro_f1`` (+ ``perclass_accuracy`` with ``TEST.PER_CLASS_RESULT``), all in percent,
and logs the block that ``parse_test_res.py`` reads::

    => result
    * total: 2,465
    * correct: 2,302
    * accuracy: 93.4%
    * error: 6.6%
    * macro_f1: 92.8%

Macro-F1 is the mean over the labels present in ``y_true`` of ``2TP / (2TP + FP + FN)`` (sklearn's
``f1_score(average="macro", labels=np.unique(y_true))``, zero when undefined), computed with NumPy.
``TEST.COMPUTE_CMAT`` saves a row-normalised confusion matrix to ``OUTPUT_DIR/cmat.pt``. After
``evaluate()``, ``per_class`` (with ``TEST.PER_CLASS_RESULT``: label, classname, total, correct,
accuracy per class) and ``confusion`` (with ``TEST.COMPUTE_CMAT``: counts, row = true label) are
what ``metrics.json`` stores (``engine.runs.run_metrics``).
"""
import os
from collections import OrderedDict, defaultdict

import numpy as np
import torch

from engine.registry import Registry
from engine.utils.io import atomic_torch_save
from engine.utils.logger import get_logger

__all__ = ["EVALUATOR_REGISTRY", "EvaluatorBase", "Classification", "build_evaluator", "macro_f1_score"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def macro_f1_score(y_true, y_pred):
    """Macro-F1 in [0, 1] over the labels present in ``y_true``."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return 0.0
    scores = []
    for label in np.unique(y_true):
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        denom = 2 * tp + fp + fn
        scores.append(2.0 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores))


class EvaluatorBase:
    """Interface: ``reset()``, ``process(mo, gt)``, ``evaluate() -> OrderedDict``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accumulates argmax predictions; see the module docstring for the metrics and the log block."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res = None
        self.reset()

    def reset(self):
        self._correct = 0
        self._total = 0
        self._y_true = []
        self._y_pred = []
        if self.cfg.TEST.PER_CLASS_RESULT:
            self._per_class_res = defaultdict(list)
        self.per_class = None  # set by evaluate() with TEST.PER_CLASS_RESULT
        self.confusion = None  # set by evaluate() with TEST.COMPUTE_CMAT

    def process(self, mo, gt):
        """``mo``: logits [B, C]; ``gt``: labels [B]."""
        pred = mo.detach().float().argmax(dim=1)
        gt = gt.detach().to(pred.device)
        matches = pred.eq(gt).int()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.cpu().tolist())
        self._y_pred.extend(pred.cpu().tolist())
        if self._per_class_res is not None:
            for label, m in zip(gt.cpu().tolist(), matches.cpu().tolist()):
                self._per_class_res[label].append(m)

    def evaluate(self):
        logger = get_logger()
        results = OrderedDict()
        acc = 100.0 * self._correct / self._total if self._total else 0.0
        err = 100.0 - acc
        macro_f1 = 100.0 * macro_f1_score(self._y_true, self._y_pred)
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        logger.info(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )
        if self._per_class_res is not None:
            labels = sorted(self._per_class_res)
            logger.info("=> per-class result")
            accs, per_class = [], []
            for label in labels:
                res = self._per_class_res[label]
                correct, total = sum(res), len(res)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                name = self._lab2cname.get(label, "") if self._lab2cname else ""
                per_class.append({"label": int(label), "classname": name, "total": total, "correct": correct,
                                  "accuracy": class_acc})
                logger.info(
                    f"* class: {label} ({name})\ttotal: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%"
                )
            mean_acc = float(np.mean(accs)) if accs else 0.0
            logger.info(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc
            self.per_class = per_class
        if self.cfg.TEST.COMPUTE_CMAT:
            self.confusion = self.confusion_counts().astype(int).tolist()
            self._save_cmat()
        return results

    def confusion_counts(self):
        """``[n, n]`` counts: row = true label, column = predicted label (n = largest label seen + 1)."""
        n = max(self._y_true + self._y_pred) + 1 if self._y_true else 0
        cmat = np.zeros((n, n), dtype=np.float64)
        np.add.at(cmat, (np.asarray(self._y_true, dtype=int), np.asarray(self._y_pred, dtype=int)), 1.0)
        return cmat

    def _save_cmat(self):
        cmat = self.confusion_counts()
        rows = cmat.sum(axis=1, keepdims=True)
        cmat = np.divide(cmat, rows, out=np.zeros_like(cmat), where=rows > 0)
        path = os.path.join(self.cfg.OUTPUT_DIR, "cmat.pt")
        atomic_torch_save(torch.from_numpy(cmat), path)
        get_logger().info(f"Confusion matrix is saved to {path}")


def build_evaluator(cfg, **kwargs):
    """Build ``EVALUATOR_REGISTRY[cfg.TEST.EVALUATOR](cfg, **kwargs)``."""
    name = cfg.TEST.EVALUATOR
    if cfg.VERBOSE:
        get_logger().info(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
