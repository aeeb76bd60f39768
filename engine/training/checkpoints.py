"""The trainer's checkpoint side: what a checkpoint of a registered model holds, saving it, resuming
from the newest epoch checkpoint or a signal's resume point, loading weights for evaluation, and the
best-val bookkeeping of a resumed run (Dassl's ``save_model`` / ``resume_model_if_exist`` / ``load_model``).
"""
import os
from collections import OrderedDict

from engine.checkpoint import BEST_FILE, CheckpointError, latest_checkpoint_path, load_checkpoint, save_checkpoint
from engine.distributed import is_main_process
from engine.resume_point import load_resume_point
from engine.training.rng_state import capture_rng_state, restore_rng_state
from engine.utils.io import atomic_write_bytes
from engine.utils.logger import get_logger

__all__ = ["CheckpointMixin"]

logger = get_logger()


class CheckpointMixin:
    """Checkpoint hooks of ``TrainerBase`` (uses ``_models``, ``_optims``, ``_scheds``, ``scaler``)."""

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
