"""Stopping on SIGINT/SIGTERM at a safe point: the resume point is saved, then the run ends."""
from engine.distributed import is_distributed
from engine.resume_point import save_resume_point
from engine.training.rng_state import capture_rng_state
from engine.utils import signals
from engine.utils.write_guard import check_writes

__all__ = ["SafeStopMixin"]


class SafeStopMixin:
    """``stop_if_requested`` of ``TrainerBase``, called by the loop after every batch and epoch."""

    def stop_if_requested(self, epochs_done, batches_done):
        """On a pending SIGINT/SIGTERM (``engine.utils.signals``): save the resume point (``epochs_done``
        complete epochs, ``batches_done`` batches of the next) and raise ``signals.Interrupted``. After
        the last epoch its checkpoint is the resume point. Distributed runs stop at once.

        First, the write guards (``engine.utils.write_guard``): a run whose output folder was taken
        over while it was paused stops here with their one line (``LockLost``) and saves nothing."""
        check_writes()
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
