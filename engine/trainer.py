"""Trainer base classes with Dassl's hooks (``TrainerBase`` -> ``SimpleTrainer`` -> ``TrainerX``).

Dassl contract kept: ``register_model``, ``train() = before_train, [before_epoch, run_epoch,
after_epoch]*, after_train``, ``test(split)``, ``save_model``/``load_model``/``resume_model_if_exist``,
the training log line and the result block. Changes: the LR schedule is stepped by the base
``run_epoch`` after the last batch of each epoch (trainers must not call ``update_lr``), checkpoints are
weights-only and carry the RNG state so ``--resume`` is bit-exact, ``--seed 0`` works, no DataParallel,
precision comes from ``TRAINER.<CFG_NODE>.PREC`` via ``engine.precision``.

Under ``torchrun`` (``engine.distributed``): the trainable tensors are broadcast from rank 0 after
``build_model``; ``model_update`` averages their gradients over ranks before the optimiser step;
the logged loss summary is the batch-size-weighted average over ranks (the one-process values);
evaluation, checkpoints and every written file happen on rank 0 while the other ranks wait at a
barrier (``test()`` returns None on them); every rank resumes from the same checkpoint.
"""
import datetime
import os
import time
from collections import OrderedDict

import numpy as np

from engine.checkpoint import BEST_FILE
from engine.distributed import average_summary, barrier, broadcast_parameters, is_main_process
from engine.evaluator import build_evaluator
from engine.precision import autocast_context, make_grad_scaler, resolve_precision
from engine.registry import Registry
from engine.resume_point import remove_resume_point
from engine.training import progress
from engine.training.checkpoints import CheckpointMixin
from engine.training.evaluation import EvaluationMixin
from engine.training.rng_state import capture_rng_state, restore_rng_state
from engine.training.safe_stop import SafeStopMixin
from engine.training.update_step import UpdateStepMixin
from engine.utils import signals
from engine.utils.device import select_device
from engine.utils.logger import get_logger
from engine.utils.meters import AverageMeter, MetricMeter

__all__ = ["TRAINER_REGISTRY", "TrainerBase", "SimpleTrainer", "TrainerX", "build_trainer", "capture_rng_state",
           "restore_rng_state"]

_progress = progress.progress  # the name earlier releases exported

TRAINER_REGISTRY = Registry("TRAINER")
logger = get_logger()


class TrainerBase(CheckpointMixin, SafeStopMixin, UpdateStepMixin):
    """Holds the registered ``(model, optimizer, scheduler)`` triples and the generic training loop."""

    def __init__(self):
        self._models = OrderedDict()
        self._optims = OrderedDict()
        self._scheds = OrderedDict()
        self._writer = None
        self.scaler = None

    # ------------------------------------------------------------------ registration
    def register_model(self, name="model", model=None, optim=None, sched=None):
        """Register a model (and its optimizer/scheduler) under ``name``; call after ``super().__init__()``."""
        if self.__dict__.get("_models") is None:
            raise AttributeError("Cannot assign model before super().__init__() call")
        if name in self._models:
            raise KeyError(f'Found duplicate model name "{name}"')
        if model is None:
            raise ValueError(f'register_model("{name}") needs a model')
        self._models[name] = model
        self._optims[name] = optim
        self._scheds[name] = sched

    def get_model_names(self, names=None):
        """All registered names, or ``names`` (str or list) after checking they exist."""
        names_real = list(self._models.keys())
        if names is None:
            return names_real
        if isinstance(names, str):
            names = [names]
        for name in names:
            if name not in names_real:
                raise KeyError(f'No model registered as "{name}"; registered: {names_real}')
        return list(names)

    # ------------------------------------------------------------------ modes, LR, tensorboard stubs
    def set_model_mode(self, mode="train", names=None):
        """``train()`` or ``eval()`` (mode "eval"/"test") on the registered models."""
        for name in self.get_model_names(names):
            if mode == "train":
                self._models[name].train()
            elif mode in ("test", "eval"):
                self._models[name].eval()
            else:
                raise ValueError(f"mode must be train, eval or test; got {mode!r}")

    def update_lr(self, names=None):
        """Step every registered scheduler once (the base ``run_epoch`` calls it after the last batch).

        A trainer ported from the official repos may still call it itself at the last batch
        (``if self.batch_idx + 1 == self.num_batches: self.update_lr()``); ``run_epoch`` then does
        not step a second time in that epoch.
        """
        self._lr_stepped_in_epoch = self.epoch
        for name in self.get_model_names(names):
            if self._scheds[name] is not None:
                self._scheds[name].step()

    def get_current_lr(self, names=None):
        """LR of the first param group of the first registered optimizer (0.0 if there is none)."""
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                return self._optims[name].param_groups[0]["lr"]
        return 0.0

    def init_writer(self, log_dir):
        """Open the run's tracker (``engine.utils.tracking``): TensorBoard events in ``log_dir``, W&B
        when ``TRAIN.WANDB_PROJECT`` is set; rank 0 only. Events of an earlier session in ``log_dir``
        are carried into this session's file up to the resumed step (one event stream per run)."""
        from engine.utils.tracking import open_tracker

        self._writer = open_tracker(getattr(self, "cfg", None), log_dir,
                                    keep_until=getattr(self, "_resumed_step", None))

    def global_step(self):
        """The step unit of every scalar of a run: optimisation steps (training batches) done so far,
        counted across resumes; 0 before training and in an ``--eval-only`` run."""
        return int(getattr(self, "_steps_done", 0))

    def close_writer(self):
        if self._writer is not None:
            self._writer.close()
        self._writer = None

    def write_scalar(self, tag, scalar_value, global_step=None):
        """Dassl's TensorBoard scalar; the tracker opens on first use in ``OUTPUT_DIR/tensorboard``."""
        if self._writer is None and getattr(self, "output_dir", ""):
            self.init_writer(os.path.join(self.output_dir, "tensorboard"))
        if self._writer is not None:
            self._writer.add_scalar(tag, scalar_value, global_step)

    # ------------------------------------------------------------------ loop
    def train(self, start_epoch=None, max_epoch=None):
        """Generic loop: ``before_train``, per epoch ``before_epoch/run_epoch/after_epoch``, ``after_train``.

        A trainer that registered no model (nothing is learned, e.g. zero-shot CLIP) has nothing to
        train: the request is logged and answered with ``test()``.
        """
        if not self.get_model_names():
            logger.info(f"{type(self).__name__} has nothing to train; evaluating the model as built instead")
            return self.test()
        if start_epoch is not None:
            self.start_epoch = start_epoch
        if max_epoch is not None:
            self.max_epoch = max_epoch
        self.before_train()
        with signals.deferred():  # SIGINT/SIGTERM: stop at the end of a batch or epoch, state saved
            for self.epoch in range(self.start_epoch, self.max_epoch):
                self.before_epoch()
                self.run_epoch()
                self.after_epoch()
                self.stop_if_requested(self.epoch + 1, 0)
        if is_main_process() and self.output_dir:
            remove_resume_point(self.output_dir, self.get_model_names())
        self.after_train()

    def before_train(self):
        pass

    def after_train(self):
        pass

    def before_epoch(self):
        pass

    def after_epoch(self):
        pass

    def run_epoch(self):
        raise NotImplementedError

    def test(self, split=None):
        raise NotImplementedError

    def parse_batch_train(self, batch):
        raise NotImplementedError

    def parse_batch_test(self, batch):
        raise NotImplementedError

    def forward_backward(self, batch):
        raise NotImplementedError

    def model_inference(self, input):
        raise NotImplementedError

class SimpleTrainer(EvaluationMixin, TrainerBase):
    """Dassl ``SimpleTrainer``: builds data, model and evaluator; checkpointing and test logic.

    ``CFG_NODE``: the trainer's config node under ``TRAINER`` (e.g. "COMMA"); its ``PREC`` sets
    ``self.precision``, ``self.scaler`` and ``self.autocast()``. No node -> fp32.
    """

    CFG_NODE = None

    def __init__(self, cfg):
        super().__init__()
        self.check_cfg(cfg)
        self.cfg = cfg
        self.device = select_device(cfg)
        self.start_epoch = self.epoch = 0
        self.max_epoch = cfg.OPTIM.MAX_EPOCH
        self.output_dir = cfg.OUTPUT_DIR
        self.batch_idx = 0
        self.num_batches = 0
        self.time_start = None
        self.precision = resolve_precision(self.prec_name(cfg), self.device)
        self.scaler = make_grad_scaler(self.precision, self.device)
        self.build_data_loader()
        self.build_model()
        broadcast_parameters(self.optimized_parameters())  # identical start on every rank
        self.evaluator = build_evaluator(cfg, lab2cname=self.lab2cname)
        self.best_result = -np.inf

    @classmethod
    def prec_name(cls, cfg):
        """``cfg.TRAINER[CFG_NODE].PREC`` if the node exists, else "fp32"."""
        node = cfg.TRAINER.get(cls.CFG_NODE) if cls.CFG_NODE else None
        if node is not None and "PREC" in node:
            return node.PREC
        return "fp32"

    def autocast(self):
        """Autocast context for the trainer's precision (a no-op unless PREC is amp)."""
        return autocast_context(self.precision, self.device)

    def check_cfg(self, cfg):
        """Hook to validate the config before anything is built."""

    def build_data_loader(self):
        """``engine.data.DataManager(cfg)``: sets the loaders, ``num_classes``, ``lab2cname``, ``classnames``,
        ``dm``."""
        from engine.data import DataManager

        dm = DataManager(self.cfg)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = getattr(dm, "train_loader_u", None)
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = getattr(dm, "num_source_domains", 1)
        self.lab2cname = dm.lab2cname
        self.classnames = list(dm.dataset.classnames)
        self.dm = dm

    def build_model(self):
        raise NotImplementedError("a trainer must implement build_model() and register its model(s)")

    def before_train(self):
        directory = self.cfg.OUTPUT_DIR
        if self.cfg.RESUME:
            directory = self.cfg.RESUME
            if not os.path.isdir(directory):
                raise FileNotFoundError(f'Resume directory not found: "{directory}"')
        self.start_epoch = self.resume_model_if_exist(directory)
        steps_per_epoch = len(self.train_loader_x) if self.train_loader_x is not None else 0
        self._steps_done = self.start_epoch * steps_per_epoch + int(getattr(self, "_resume_batch", 0) or 0)
        self._resumed_step = self._steps_done
        if self.cfg.TEST.FINAL_MODEL == "best_val" and self.start_epoch > 0:
            self._restore_best_result(directory)
        self.time_start = time.time()

    def after_epoch(self):
        last_epoch = (self.epoch + 1) == self.max_epoch
        do_test = not self.cfg.TEST.NO_TEST
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        meet_checkpoint_freq = (self.epoch + 1) % freq == 0 if freq > 0 else False
        if is_main_process():  # the other ranks of a distributed run wait at the barrier
            if do_test and self.cfg.TEST.FINAL_MODEL == "best_val":
                curr_result = self.test(split="val")
                if curr_result > self.best_result:
                    self.best_result = curr_result
                    self.save_model(self.epoch, self.output_dir, val_result=curr_result, model_name=BEST_FILE)
            if meet_checkpoint_freq or last_epoch:
                self.save_model(self.epoch, self.output_dir)
        barrier()

    def after_train(self):
        logger.info("Finish training")
        if not self.cfg.TEST.NO_TEST and is_main_process():
            if self.cfg.TEST.FINAL_MODEL == "best_val":
                logger.info("Deploy the model with the best val performance")
                self.load_model(self.output_dir)
            else:
                logger.info("Deploy the last-epoch model")
            self.test()
        start = self.time_start if self.time_start is not None else time.time()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - start)))
        logger.info(f"Elapsed: {elapsed}")
        self.close_writer()
        barrier()

    def parse_batch_train(self, batch):
        """``(img, label)`` on the trainer's device."""
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def parse_batch_test(self, batch):
        """``(img, label)`` on the trainer's device."""
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def model_inference(self, input):
        return self.model(input)


class TrainerX(SimpleTrainer):
    """Dassl ``TrainerX``: one labelled loader; ``run_epoch`` logs and steps the LR after the last batch."""

    def run_epoch(self):
        self.set_model_mode("train")
        losses = MetricMeter()
        batch_time = AverageMeter()
        data_time = AverageMeter()
        self.num_batches = len(self.train_loader_x)
        print_freq = max(1, self.cfg.TRAIN.PRINT_FREQ)
        end = time.time()
        batches, skip = self._epoch_batches()
        bar = progress.progress(batches, f"epoch {self.epoch + 1}/{self.max_epoch}", log_without_tty=False)
        for self.batch_idx, batch in enumerate(bar, start=skip):
            data_time.update(time.time() - end)
            lr_used = self.get_current_lr()  # the LR of this batch's optimizer step (update_lr may follow)
            loss_summary = average_summary(self.forward_backward(batch), self.local_batch_size(batch))
            self._steps_done = self.global_step() + 1
            if self.batch_idx + 1 == self.num_batches and not self._lr_stepped_this_epoch():
                self.update_lr()
            batch_time.update(time.time() - end)
            losses.update(loss_summary)

            meet_freq = (self.batch_idx + 1) % print_freq == 0
            only_few_batches = self.num_batches < print_freq
            if meet_freq or only_few_batches:
                nb_remain = self.num_batches - self.batch_idx - 1
                nb_remain += (self.max_epoch - self.epoch - 1) * self.num_batches
                eta = str(datetime.timedelta(seconds=int(batch_time.avg * nb_remain)))
                info = [
                    f"epoch [{self.epoch + 1}/{self.max_epoch}]",
                    f"batch [{self.batch_idx + 1}/{self.num_batches}]",
                    f"time {batch_time.val:.3f} ({batch_time.avg:.3f})",
                    f"data {data_time.val:.3f} ({data_time.avg:.3f})",
                    f"{losses}",
                    f"lr {lr_used:.4e}",
                    f"eta {eta}",
                ]
                logger.info(" ".join(info))
                step = self.global_step()  # scalars with the log line only, x = steps done
                for name, meter in losses.meters.items():
                    self.write_scalar("train/" + name, meter.avg, step)
                self.write_scalar("train/lr", lr_used, step)
                self.write_scalar("train/epoch", self.epoch + (self.batch_idx + 1) / self.num_batches, step)
            end = time.time()
            if self.batch_idx + 1 < self.num_batches:
                self.stop_if_requested(self.epoch, self.batch_idx + 1)
        if not self._lr_stepped_this_epoch():
            self.update_lr()

    def _epoch_batches(self):
        """``(iterator over this epoch's training batches, batches skipped)``. After a resume point
        (``engine.resume_point``) the loader is replayed from the epoch's starting RNG state and the
        batches already trained on are skipped; then the RNG state of the stop is restored."""
        skip, epoch_rng = getattr(self, "_resume_batch", 0), getattr(self, "_resume_epoch_rng", None)
        self._resume_batch, self._resume_epoch_rng = 0, None
        if not skip or epoch_rng is None:
            self._epoch_rng_state = capture_rng_state()
            return iter(self.train_loader_x), 0
        stop_rng = capture_rng_state()
        restore_rng_state(epoch_rng)
        self._epoch_rng_state = epoch_rng
        batches = iter(self.train_loader_x)
        for _ in range(skip):
            next(batches)
        restore_rng_state(stop_rng)
        logger.info(f"Skipped the {skip} batch(es) of epoch {self.epoch + 1} trained before the stop")
        return batches, skip

    @staticmethod
    def local_batch_size(batch):
        """Images in this process's batch: the weight of its loss summary in a distributed run."""
        label = batch.get("label") if isinstance(batch, dict) else None
        return len(label) if label is not None else 1

    def _lr_stepped_this_epoch(self):
        return getattr(self, "_lr_stepped_in_epoch", None) == self.epoch


def build_trainer(cfg):
    """Instantiate ``TRAINER_REGISTRY[cfg.TRAINER.NAME](cfg)`` (case-insensitive, aliases allowed)."""
    cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if cfg.VERBOSE:
        logger.info(f"Loading trainer: {cls.__name__}")
    return cls(cfg)
