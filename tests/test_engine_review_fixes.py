"""Engine behaviours around ported trainers and best_val resumes (regressions found in review)."""
import pytest
import torch

from engine.trainer import TRAINER_REGISTRY
from test_engine_toy import ToyLinear, build_toy, toy_cfg, weights  # one module object (registries)


class PortedToy(ToyLinear):
    """A trainer ported from the official repos: steps the LR itself at the last batch, as they do."""

    def forward_backward(self, batch):
        summary = super().forward_backward(batch)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary


TRAINER_REGISTRY.register(PortedToy, force=True)


def test_ported_update_lr_call_steps_once_per_epoch(tmp_path):
    opts = ("OPTIM.MAX_EPOCH", "4", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant")
    plain = build_toy(toy_cfg(tmp_path / "plain", *opts))
    plain.train()
    cfg = toy_cfg(tmp_path / "ported", *opts, "TRAINER.NAME", "PortedToy")
    from engine.utils import set_random_seed, setup_logger

    setup_logger(cfg.OUTPUT_DIR)
    set_random_seed(1)
    ported = PortedToy(cfg)
    ported.train()
    assert ported.sched.state_dict() == plain.sched.state_dict()
    assert ported.sched.last_epoch == 4
    for k, v in weights(plain).items():
        assert torch.equal(weights(ported)[k], v), k


def _best_val_opts():
    return ("TEST.FINAL_MODEL", "best_val", "TRAIN.CHECKPOINT_FREQ", "1")


def test_best_val_resume_from_other_folder_deploys_the_best_model(tmp_path):
    finished = build_toy(toy_cfg(tmp_path / "a", *_best_val_opts()))
    finished.train()
    best_a = torch.load(tmp_path / "a" / "model" / "model-best.pth.tar", weights_only=True)
    resumed = build_toy(toy_cfg(tmp_path / "b", "RESUME", str(tmp_path / "a"), *_best_val_opts()))
    resumed.train()  # nothing left to train: deploys A's best model, copied into B
    copied = torch.load(tmp_path / "b" / "model" / "model-best.pth.tar", weights_only=True)
    assert copied["val_result"] == best_a["val_result"] == resumed.best_result
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(best_a["state_dict"][k], v), k


def test_stale_best_file_is_ignored_when_training_from_scratch(tmp_path):
    old = build_toy(toy_cfg(tmp_path, *_best_val_opts()))
    old.train()
    (tmp_path / "model" / "checkpoint").unlink()
    for f in (tmp_path / "model").glob("model.pth.tar-*"):
        f.unlink()
    fresh = build_toy(toy_cfg(tmp_path, *_best_val_opts()))
    fresh.train()  # from scratch: its epoch-1 validation must become the new best, saved again
    new_run = (tmp_path / "log.txt").read_text().split("==================== new run ")[-1]
    assert "No checkpoint found, train from scratch" in new_run
    saved_best = f"Checkpoint saved to {tmp_path / 'model' / 'model-best.pth.tar'}"
    assert saved_best in new_run  # with the stale score restored, no epoch would beat it
    best = torch.load(tmp_path / "model" / "model-best.pth.tar", weights_only=True)
    assert best["val_result"] == fresh.best_result


class TwoModelToy(ToyLinear):
    """Two registered models (as multi-model Dassl trainers have)."""

    def build_model(self):
        super().build_model()
        self.head2 = torch.nn.Linear(2, 2)
        self.register_model("head2", self.head2)


TRAINER_REGISTRY.register(TwoModelToy, force=True)


def test_resume_refuses_models_saved_at_different_epochs(tmp_path):
    from engine.checkpoint import CheckpointError
    from engine.utils import set_random_seed, setup_logger

    cfg = toy_cfg(tmp_path, "TRAINER.NAME", "TwoModelToy", "TRAIN.CHECKPOINT_FREQ", "1")
    setup_logger(cfg.OUTPUT_DIR)
    set_random_seed(1)
    first = TwoModelToy(cfg)
    first.crash_before_epoch = 2
    with pytest.raises(KeyboardInterrupt):
        first.train()
    (tmp_path / "head2" / "checkpoint").write_text("model.pth.tar-1")  # as if killed between two saves
    resumed = TwoModelToy(cfg)
    with pytest.raises(CheckpointError, match="different epochs"):
        resumed.train()
