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
import random
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
from tqdm import tqdm

from engine.checkpoint import BEST_FILE, CheckpointError, latest_checkpoint_path, load_checkpoint, save_checkpoint
from engine.distributed import (average_gradients, average_summary, barrier, broadcast_parameters, is_distributed,
                                 is_main_process)
from engine.evaluator import build_evaluator
from engine.precision import autocast_context, make_grad_scaler, resolve_precision
from engine.registry import Registry
from engine.runs.run_metrics import write_run_metrics
from engine.resume_point import load_resume_point, remove_resume_point, save_resume_point
from engine.utils import signals
from engine.utils.device import select_device
from engine.utils.io import atomic_save_npz, atomic_write_bytes
from engine.utils.logger import get_logger
from engine.utils.meters import AverageMeter, MetricMeter

__all__ = ["TRAINER_REGISTRY", "TrainerBase", "SimpleTrainer", "TrainerX", "build_trainer", "capture_rng_state",
           "restore_rng_state"]

TRAINER_REGISTRY = Registry("TRAINER")
logger = get_logger()


def _progress(iterable, desc, log_without_tty=True):
    """tqdm bar on stderr on an interactive terminal; otherwise (batch jobs, redirected output) a log
    line at every 10% of the loop, so long evaluations still show progress in ``log.txt`` (training
    has its own iteration lines: ``log_without_tty=False``). No bar on ranks other than 0."""
    if not is_main_process():
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
    return _logged_progress(iterable, desc) if log_without_tty else iterable


def _logged_progress(iterable, desc, parts=10):
    total = len(iterable) if hasattr(iterable, "__len__") else 0
    marks = {max(1, round(total * k / parts)) for k in range(1, parts)} if total >= 2 * parts else set()
    start = time.time()
    for i, item in enumerate(iterable, 1):
        yield item
        if i in marks:
            logger.info(f"{desc}: {i}/{total} batches ({time.time() - start:.0f} s)")


def capture_rng_state():
    """Python, NumPy, torch (and CUDA) RNG states as plain lists/ints/tensors (weights-only safe)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state):
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainerBase:
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

    # ------------------------------------------------------------------ checkpoint hooks
    def state_dict_for_checkpoint(self, name):
        """What ``save_model`` stores as ``state_dict`` for ``name`` (default: the full state dict)."""
        return self._models[name].state_dict()

    def load_state_dict_from_checkpoint(self, name, state_dict, source="checkpoint"):
        """Load ``state_dict`` (read from ``source``) into model ``name``.

        Strict with respect to what ``state_dict_for_checkpoint`` saves (minus ``IGNORE_KEYS_ON_LOAD``):
        a missing, unexpected or wrongly shaped tensor raises a one-line ``CheckpointError`` naming ``source``.
        Trainers that load partial or foreign state dicts override this hook.
        """
        model = self._models[name]
        own = model.state_dict()
        state_dict = OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())
        for key, value in state_dict.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"{source}: tensor {key} of {name} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(own[key].shape)}"
                )
        expected = self.filter_state_dict_on_load(self.state_dict_for_checkpoint(name))
        unexpected = sorted(k for k in state_dict if k not in own)
        missing = sorted(k for k in expected if k not in state_dict)
        if unexpected or missing:
            raise CheckpointError(
                f"{source} does not match {name}: {len(missing)} missing key(s) {missing[:3]}, "
                f"{len(unexpected)} unexpected key(s) {unexpected[:3]}"
            )
        model.load_state_dict(state_dict, strict=False)

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Write ``directory/<name>/model.pth.tar-<epoch+1>`` (or ``model_name``) for every model (rank 0 only)."""
        if not is_main_process():
            return
        rng_state = capture_rng_state()
        for name in self.get_model_names():
            state = self.checkpoint_state(name, epoch + 1, rng_state, val_result)
            save_checkpoint(state, os.path.join(directory, name), is_best=is_best, model_name=model_name)

    def checkpoint_state(self, name, epoch, rng_state, val_result=None):
        """The checkpoint dict of model ``name`` (``epoch`` = completed epochs)."""
        optim, sched = self._optims[name], self._scheds[name]
        state = {
            "state_dict": self.state_dict_for_checkpoint(name),
            "epoch": epoch,
            "optimizer": optim.state_dict() if optim is not None else None,
            "scheduler": sched.state_dict() if sched is not None else None,
            "val_result": None if val_result is None else float(val_result),
            "rng_state": rng_state,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def resume_model_if_exist(self, directory):
        """Restore every model/optimizer/scheduler (and the RNG state) from ``directory``; return the start epoch.

        The newest of the epoch checkpoints and the resume point of a run stopped by a signal
        (``engine.resume_point``; then ``self._resume_batch`` batches of the start epoch are skipped).
        """
        start_epoch = self._resume_epoch_checkpoints(directory)
        point = load_resume_point(directory, self.get_model_names(), start_epoch)
        if point is None:
            return start_epoch
        for name, ckpt in point.items():
            self._load_training_state(name, ckpt, os.path.join(directory, name))
        ckpt = next(iter(point.values()))
        restore_rng_state(ckpt["rng_state"])
        self._resume_batch, self._resume_epoch_rng = int(ckpt["batch"]), ckpt.get("epoch_rng_state")
        logger.info(f"Resuming from the state saved when the run was stopped: epoch {int(ckpt['epoch']) + 1}, "
                    f"after batch {self._resume_batch}")
        return int(ckpt["epoch"])

    def _load_training_state(self, name, ckpt, source):
        self.load_state_dict_from_checkpoint(name, ckpt["state_dict"], source=source)
        if self._optims[name] is not None and ckpt.get("optimizer"):
            self._optims[name].load_state_dict(ckpt["optimizer"])
        if self._scheds[name] is not None and ckpt.get("scheduler"):
            self._scheds[name].load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    def _resume_epoch_checkpoints(self, directory):
        """Every registered model needs a ``directory/<name>/checkpoint`` pointer; otherwise logs
        "No checkpoint found, train from scratch" and returns 0."""
        names = self.get_model_names()
        paths = {}
        for name in names:
            path = latest_checkpoint_path(os.path.join(directory, name))
            if path is None:
                logger.info("No checkpoint found, train from scratch")
                return 0
            paths[name] = path
        if not names:
            return 0
        logger.info(f"Found checkpoint at {directory} (will resume training)")
        checkpoints = {name: load_checkpoint(paths[name]) for name in names}
        epochs = {name: int(ckpt["epoch"]) for name, ckpt in checkpoints.items()}
        if len(set(epochs.values())) > 1:  # e.g. a job killed between two models' saves
            raise CheckpointError(f"checkpoints in {directory} are at different epochs {epochs}; "
                                  "remove the newer files or the folder to resume consistently")
        start_epoch = 0
        rng_state = None
        for name in names:
            logger.info(f'Loading checkpoint from "{paths[name]}"')
            ckpt = checkpoints[name]
            self._load_training_state(name, ckpt, paths[name])
            start_epoch = int(ckpt["epoch"])
            rng_state = rng_state or ckpt.get("rng_state")
            logger.info(f"Previous epoch: {start_epoch}")
        if rng_state is not None:
            restore_rng_state(rng_state)
        return start_epoch

    def load_model(self, directory, epoch=None):
        """Load weights for evaluation: ``model.pth.tar-<epoch>``, else ``model-best.pth.tar``, else the latest."""
        if not directory:
            logger.info("Note that load_model() is skipped as no pretrained model is given")
            return
        if not self.get_model_names():
            logger.info(f"{type(self).__name__} has no learned weights: --model-dir {directory} is ignored")
            return
        if not os.path.isdir(directory):
            raise FileNotFoundError(f'Model directory not found: "{directory}"')
        for name in self.get_model_names():
            model_dir = os.path.join(directory, name)
            if epoch is not None:
                model_path = os.path.join(model_dir, f"model.pth.tar-{epoch}")
            elif os.path.isfile(os.path.join(model_dir, BEST_FILE)):
                model_path = os.path.join(model_dir, BEST_FILE)
            else:
                model_path = latest_checkpoint_path(model_dir) or os.path.join(model_dir, BEST_FILE)
            if not os.path.isfile(model_path):
                raise FileNotFoundError(f'Model not found at "{model_path}"')
            ckpt = self.read_checkpoint(model_path)
            state_dict = self.filter_state_dict_on_load(ckpt["state_dict"])
            val = ckpt.get("val_result")
            extra = f", val_result = {val:.1f}" if isinstance(val, (int, float)) else ""
            logger.info(f'Loading weights to {name} from "{model_path}" (epoch = {ckpt.get("epoch")}{extra})')
            self.load_state_dict_from_checkpoint(name, state_dict, source=model_path)
            self.loaded_epoch = ckpt.get("epoch")  # reported in metrics.json

    def read_checkpoint(self, path):
        """Hook: read the checkpoint file ``path`` for ``load_model`` (default: our plain format)."""
        return load_checkpoint(path)

    # Key names (last dotted component or full key) dropped by ``load_model``, e.g. class-dependent
    # buffers ("token_prefix", "token_suffix") when evaluating on other classes than trained on.
    IGNORE_KEYS_ON_LOAD = ()

    def filter_state_dict_on_load(self, state_dict):
        """Drop the keys named by ``IGNORE_KEYS_ON_LOAD`` before ``load_model`` loads ``state_dict``."""
        ignore = set(self.IGNORE_KEYS_ON_LOAD)
        if not ignore:
            return state_dict
        return OrderedDict((k, v) for k, v in state_dict.items() if k not in ignore and k.split(".")[-1] not in ignore)

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

    def detect_anomaly(self, loss):
        """Raise ``FloatingPointError`` (one line: epoch, batch, the loss terms, what to try) if ``loss``
        is not finite. The terms are ``self.loss_terms`` (a trainer's loss summary) when set."""
        if not torch.isfinite(loss).all():
            from engine.nonfinite import nonfinite_loss_message

            raise FloatingPointError(nonfinite_loss_message(self, loss))

    def init_writer(self, log_dir):
        """Open the run's tracker (``engine.utils.tracking``): TensorBoard events in ``log_dir``, W&B
        when ``TRAIN.WANDB_PROJECT`` is set; rank 0 only."""
        from engine.utils.tracking import open_tracker

        self._writer = open_tracker(getattr(self, "cfg", None), log_dir)

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

    def stop_if_requested(self, epochs_done, batches_done):
        """On a pending SIGINT/SIGTERM (``engine.utils.signals``): save the resume point (``epochs_done``
        complete epochs, ``batches_done`` batches of the next) and raise ``signals.Interrupted``. After
        the last epoch its checkpoint is the resume point. Distributed runs stop at once."""
        signum = signals.stop_requested()
        if signum is None:
            return
        where = f"epoch {epochs_done + 1}/{self.max_epoch}, batch {batches_done}/{self.num_batches}"
        if epochs_done >= self.max_epoch:
            where = f"the end of the last epoch ({self.max_epoch})"
        elif batches_done == 0:
            where = f"the end of epoch {epochs_done}/{self.max_epoch}"
        if is_distributed() or not self.output_dir:
            raise signals.Interrupted(signum, where)
        if epochs_done < self.max_epoch:
            rng_state = capture_rng_state()
            states = {}
            for name in self.get_model_names():
                states[name] = self.checkpoint_state(name, epochs_done, rng_state)
                states[name].update(batch=batches_done, epoch_rng_state=getattr(self, "_epoch_rng_state", None)
                                    if batches_done else None)
            save_resume_point(self.output_dir, states)
        raise signals.Interrupted(signum, where, saved=self.output_dir)

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

    # ------------------------------------------------------------------ optimisation steps
    def model_zero_grad(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self._optims[name].zero_grad()

    def model_backward(self, loss):
        """Non-finite check, then ``backward`` (through the GradScaler when amp on CUDA)."""
        self.detect_anomaly(loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def optimized_parameters(self, names=None):
        """The tensors that the registered optimisers of ``names`` update (each once, in order)."""
        seen, params = set(), []
        for name in self.get_model_names(names):
            optim = self._optims[name]
            for group in (optim.param_groups if optim is not None else ()):
                for p in group["params"]:
                    if id(p) not in seen:
                        seen.add(id(p))
                        params.append(p)
        return params

    def model_update(self, names=None):
        """Average the gradients over ranks (distributed runs), then step the optimiser(s)."""
        average_gradients(self.optimized_parameters(names))
        stepped = False
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                if self.scaler is not None:
                    self.scaler.step(self._optims[name])
                else:
                    self._optims[name].step()
                stepped = True
        if stepped and self.scaler is not None:
            self.scaler.update()

    def model_backward_and_update(self, loss, names=None):
        """Zero grads, backward (with the non-finite check), optimizer step(s)."""
        self.model_zero_grad(names)
        self.model_backward(loss)
        self.model_update(names)


class SimpleTrainer(TrainerBase):
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
        if self.cfg.TEST.FINAL_MODEL == "best_val" and self.start_epoch > 0:
            self._restore_best_result(directory)
        self.time_start = time.time()

    def _restore_best_result(self, directory):
        """Resumed best_val run: take over the best score and, when resuming from another folder,
        copy its best files into OUTPUT_DIR (``after_train`` deploys ``OUTPUT_DIR``'s best model)."""
        for name in self.get_model_names():
            best = os.path.join(directory, name, BEST_FILE)
            if not os.path.isfile(best):
                continue
            target = os.path.join(self.output_dir, name, BEST_FILE)
            if os.path.abspath(best) != os.path.abspath(target) and is_main_process():
                with open(best, "rb") as f:
                    atomic_write_bytes(target, f.read())
            val = load_checkpoint(best).get("val_result")
            if isinstance(val, (int, float)):
                self.best_result = float(val)

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
            for batch in _progress(data_loader, f"test ({split})"):
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
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        if save_preds:
            self._save_predictions(impaths, labels, logits)
        if split == "test":
            write_run_metrics(self, results, time.time() - eval_start)  # OUTPUT_DIR/metrics.json
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
        bar = _progress(batches, f"epoch {self.epoch + 1}/{self.max_epoch}", log_without_tty=False)
        for self.batch_idx, batch in enumerate(bar, start=skip):
            data_time.update(time.time() - end)
            loss_summary = average_summary(self.forward_backward(batch), self.local_batch_size(batch))
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
                    f"lr {self.get_current_lr():.4e}",
                    f"eta {eta}",
                ]
                logger.info(" ".join(info))
                n_iter = self.epoch * self.num_batches + self.batch_idx  # scalars with the log line only
                for name, meter in losses.meters.items():
                    self.write_scalar("train/" + name, meter.avg, n_iter)
                self.write_scalar("train/lr", self.get_current_lr(), n_iter)
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
