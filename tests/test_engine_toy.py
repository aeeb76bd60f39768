"""Toy trainer and toy datasets for the engine tests (registered on import), plus trainer-loop tests.

``ToyLinear`` is a ``TrainerX`` with a linear classifier. With ``DATASET.NAME ""`` it trains on an
in-memory Gaussian-blob dataset (no files); with ``DATASET.NAME ToyImages`` it goes through the real
``engine.data.DataManager`` on tiny PNGs that ``ToyImages`` writes under ``DATASET.ROOT``.
"""
import os
import random
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from engine.config import get_cfg_default, merge_from_list
from engine.optim import build_lr_scheduler, build_optimizer
from engine.trainer import TRAINER_REGISTRY, TrainerX

IN_DIM = 12
NUM_CLASSES = 3
SIZES = {"train": 24, "val": 9, "test": 15}
ITER_RE = re.compile(
    r"^epoch \[(\d+)/(\d+)\] batch \[(\d+)/(\d+)\] time \d+\.\d{3} \(\d+\.\d{3}\) "
    r"data \d+\.\d{3} \(\d+\.\d{3}\) loss (\d+\.\d{4}) \((\d+\.\d{4})\) "
    r"(?:acc \d+\.\d{4} \(\d+\.\d{4}\) )?lr (\d\.\d{4}e[-+]\d\d) eta \d+:\d\d:\d\d$"
)


def toy_tensors(split):
    """Deterministic blobs (independent of the global RNG): ``(x [N, IN_DIM], y [N])``."""
    centers = torch.randn(NUM_CLASSES, IN_DIM, generator=torch.Generator().manual_seed(1234)) * 2.0
    g = torch.Generator().manual_seed({"train": 1, "val": 2, "test": 3}[split])
    n = SIZES[split]
    y = torch.arange(n) % NUM_CLASSES
    x = centers[y] + 1.5 * torch.randn(n, IN_DIM, generator=g)
    return x, y


class BlobDataset(Dataset):
    """Dassl-style dict items over :func:`toy_tensors`."""

    def __init__(self, split):
        self.split = split
        self.x, self.y = toy_tensors(split)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"img": self.x[i], "label": int(self.y[i]), "impath": f"toy/{self.split}/{i:03d}.pt",
                "index": i, "domain": 0}


class ToyLinear(TrainerX):
    """Linear classifier; ``crash_before_epoch`` (0-based) simulates a killed job."""

    crash_before_epoch = None
    nan_at_batch = None

    def build_data_loader(self):
        if self.cfg.DATASET.NAME:
            return super().build_data_loader()
        bs = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        train = BlobDataset("train")
        self.train_loader_x = DataLoader(train, batch_size=bs, sampler=RandomSampler(train),
                                         drop_last=len(train) >= bs)
        self.val_loader = DataLoader(BlobDataset("val"), batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                     sampler=SequentialSampler(BlobDataset("val")))
        test = BlobDataset("test")
        self.test_loader = DataLoader(test, batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                                      sampler=SequentialSampler(test))
        self.num_classes = NUM_CLASSES
        self.lab2cname = {i: f"class{i}" for i in range(NUM_CLASSES)}
        self.classnames = [self.lab2cname[i] for i in range(NUM_CLASSES)]
        self.dm = None

    def build_model(self):
        if self.cfg.DATASET.NAME:
            h, w = self.cfg.INPUT.SIZE
            in_dim = 3 * h * w
        else:
            in_dim = IN_DIM
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, self.num_classes)).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def before_epoch(self):
        if self.crash_before_epoch is not None and self.epoch == self.crash_before_epoch:
            raise KeyboardInterrupt(f"simulated kill before epoch {self.epoch + 1}")

    def forward_backward(self, batch):
        img, label = self.parse_batch_train(batch)
        with self.autocast():
            out = self.model(img)
        loss = F.cross_entropy(out.float(), label)
        if self.nan_at_batch is not None and self.batch_idx == self.nan_at_batch:
            loss = loss * float("nan")
        self.model_backward_and_update(loss)
        return {"loss": loss.item(), "acc": 100.0 * (out.argmax(1) == label).float().mean().item()}


TRAINER_REGISTRY.register(ToyLinear, force=True)


def _register_toy_images():
    """Register ``ToyImages`` in the data engineer's DATASET_REGISTRY (None if engine.data is missing)."""
    try:
        from engine.data import DATASET_REGISTRY, DatasetBase, Datum
    except ImportError:
        return None
    from PIL import Image

    class ToyImages(DatasetBase):
        """3 classes of 8x8 colour patches: 4/2/3 images per class in train/val/test."""

        rng_state_at_build = None
        classes = ("red", "green", "blue")

        def __init__(self, cfg):
            type(self).rng_state_at_build = random.getstate()
            root = os.path.join(os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)), "toy_images")
            splits = {}
            for split, per_class in (("train", 4), ("val", 2), ("test", 3)):
                items = []
                for label, name in enumerate(self.classes):
                    for k in range(per_class):
                        path = os.path.join(root, split, f"{name}_{k}.png")
                        if not os.path.isfile(path):
                            os.makedirs(os.path.dirname(path), exist_ok=True)
                            rgb = np.full((8, 8, 3), 40, dtype=np.uint8)
                            rgb[..., label] = 120 + 30 * k
                            rgb[k % 8, :, :] = 255 - 20 * k
                            Image.fromarray(rgb).save(path)
                        items.append(Datum(impath=path, label=label, classname=name))
                splits[split] = items
            super().__init__(train_x=splits["train"], val=splits["val"], test=splits["test"])

    DATASET_REGISTRY.register(ToyImages, force=True)
    return ToyImages


ToyImages = _register_toy_images()


def toy_cfg(output_dir, *opts, name=""):
    """Frozen toy config: SGD lr 0.1, cosine, 3 epochs, bs 4, fp32 on CPU, plus ``opts``."""
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    merge_from_list(cfg, [
        "TRAINER.NAME", "ToyLinear", "OUTPUT_DIR", str(output_dir), "USE_CUDA", "False", "SEED", "1",
        "OPTIM.NAME", "sgd", "OPTIM.LR", "0.1", "OPTIM.MAX_EPOCH", "3", "OPTIM.LR_SCHEDULER", "cosine",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0",
        "TRAIN.PRINT_FREQ", "2", "DATASET.NAME", name, "INPUT.SIZE", "(8, 8)", *opts,
    ])
    cfg.freeze()
    return cfg


def build_toy(cfg, seed=1):
    """Seed like train.py, then build the toy trainer."""
    from engine.utils import set_random_seed, setup_logger

    setup_logger(cfg.OUTPUT_DIR)
    set_random_seed(seed)
    return ToyLinear(cfg)


def weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


# ------------------------------------------------------------------------------------------ tests
def test_iteration_lines_format_count_and_lr(tmp_path):
    """6 batches/epoch, PRINT_FREQ 2 -> 3 lines per epoch in Dassl's exact format; every line shows the LR
    its batch's optimiser step used, also the epoch's last line (the scheduler steps after that batch)."""
    cfg = toy_cfg(tmp_path, "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant")
    trainer = build_toy(cfg)
    trainer.train()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    iters = [ITER_RE.match(line) for line in lines if line.startswith("epoch [")]
    assert all(iters), [line for line in lines if line.startswith("epoch [")]
    got = [(int(m.group(1)), int(m.group(3)), m.group(7)) for m in iters]
    # cosine over 3 epochs with 1 warm-up epoch: 1e-5, 0.1, 0.1*(1+cos(pi/3))/2 = 0.075
    assert got == [
        (1, 2, "1.0000e-05"), (1, 4, "1.0000e-05"), (1, 6, "1.0000e-05"),
        (2, 2, "1.0000e-01"), (2, 4, "1.0000e-01"), (2, 6, "1.0000e-01"),
        (3, 2, "7.5000e-02"), (3, 4, "7.5000e-02"), (3, 6, "7.5000e-02"),
    ]
    assert all(m.group(2) == "3" and m.group(4) == "6" for m in iters)


def test_every_batch_logged_when_fewer_batches_than_print_freq(tmp_path):
    cfg = toy_cfg(tmp_path, "TRAIN.PRINT_FREQ", "20", "OPTIM.MAX_EPOCH", "1")
    build_toy(cfg).train()
    lines = [line for line in (tmp_path / "log.txt").read_text().splitlines() if line.startswith("epoch [")]
    assert [ITER_RE.match(line).group(3) for line in lines] == ["1", "2", "3", "4", "5", "6"]


def test_train_end_lines_checkpoint_and_result_block(tmp_path):
    cfg = toy_cfg(tmp_path)
    trainer = build_toy(cfg)
    trainer.train()
    text = (tmp_path / "log.txt").read_text()
    lines = text.splitlines()
    ckpt = tmp_path / "model" / "model.pth.tar-3"
    assert f"Checkpoint saved to {ckpt}" in lines
    assert not (tmp_path / "model" / "model.pth.tar-1").exists()  # CHECKPOINT_FREQ 0: last epoch only
    assert (tmp_path / "model" / "checkpoint").read_text().strip() == "model.pth.tar-3"
    i = lines.index("Finish training")
    assert lines[i + 1] == "Deploy the last-epoch model"
    assert lines[i + 2] == "Evaluate on the *test* set"
    assert lines[i + 3] == "=> result"
    assert lines[i + 4] == f"* total: {SIZES['test']}"
    correct = int(re.fullmatch(r"\* correct: (\d+)", lines[i + 5]).group(1))
    acc = 100.0 * correct / SIZES["test"]
    assert lines[i + 6] == f"* accuracy: {acc:.1f}%"
    assert lines[i + 7] == f"* error: {100 - acc:.1f}%"
    assert re.fullmatch(r"\* macro_f1: \d+\.\d%", lines[i + 8])
    assert re.fullmatch(r"Elapsed: \d+:\d\d:\d\d", lines[i + 9])
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 3 and saved["val_result"] is None
    assert set(saved) >= {"state_dict", "epoch", "optimizer", "scheduler", "val_result"}
    assert saved["scheduler"] == {"last_epoch": 3, "base_lrs": [0.1]}
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(saved["state_dict"][k], v)


def test_resume_equals_uninterrupted(tmp_path):
    """3 epochs in one go == 1 epoch, kill, resume for 2: identical weights, LR state and accuracy."""
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    opts = ("TRAIN.CHECKPOINT_FREQ", "1", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant")
    full = build_toy(toy_cfg(full_dir, *opts))
    full.train()
    acc_full = full.test()

    first = build_toy(toy_cfg(cut_dir, *opts))
    first.crash_before_epoch = 1
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert (cut_dir / "model" / "checkpoint").read_text().strip() == "model.pth.tar-1"
    w_after_1 = weights(first)
    assert any(not torch.equal(w_after_1[k], v) for k, v in weights(full).items())

    # a fresh process: different global RNG state before resuming (it must be restored from the checkpoint)
    resumed = build_toy(toy_cfg(cut_dir, *opts), seed=999)
    resumed.train()
    assert resumed.start_epoch == 1
    for k, v in weights(full).items():
        assert torch.equal(weights(resumed)[k], v), k
    assert resumed.sched.state_dict() == full.sched.state_dict()
    assert resumed.optim.param_groups[0]["lr"] == full.optim.param_groups[0]["lr"]
    assert resumed.test() == acc_full
    log = (cut_dir / "log.txt").read_text()
    assert "Found checkpoint at" in log and "No checkpoint found, train from scratch" in log
    assert "==================== new run " in log  # the resumed run appended to the same log.txt


def test_resume_flag_directory_and_missing_dir(tmp_path):
    opts = ("TRAIN.CHECKPOINT_FREQ", "1")
    first = build_toy(toy_cfg(tmp_path / "a", *opts))
    first.crash_before_epoch = 2
    with pytest.raises(KeyboardInterrupt):
        first.train()
    resumed = build_toy(toy_cfg(tmp_path / "b", "RESUME", str(tmp_path / "a"), *opts))
    resumed.train()
    assert resumed.start_epoch == 2
    assert (tmp_path / "b" / "model" / "model.pth.tar-3").is_file()
    missing = build_toy(toy_cfg(tmp_path / "c", "RESUME", str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="nope"):
        missing.train()


def test_save_predictions_npz(tmp_path):
    cfg = toy_cfg(tmp_path, "TEST.SAVE_PREDICTIONS", "True", "OPTIM.MAX_EPOCH", "1")
    trainer = build_toy(cfg)
    trainer.train()
    with np.load(tmp_path / "predictions.npz", allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    assert set(data) == {"impath", "label", "logits"}
    x, y = toy_tensors("test")
    assert list(data["impath"]) == [f"toy/test/{i:03d}.pt" for i in range(SIZES["test"])]
    assert data["label"].dtype == np.int64 and np.array_equal(data["label"], y.numpy())
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(x).numpy()
    assert data["logits"].shape == (SIZES["test"], NUM_CLASSES)
    np.testing.assert_allclose(data["logits"], expected, rtol=1e-6, atol=1e-6)
    acc = 100.0 * (data["logits"].argmax(1) == data["label"]).mean()
    assert trainer.test() == pytest.approx(acc)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_best_val_saves_and_deploys_best(tmp_path):
    cfg = toy_cfg(tmp_path, "TEST.FINAL_MODEL", "best_val")
    trainer = build_toy(cfg)
    trainer.train()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines.count("Evaluate on the *val* set") == 3
    assert "Deploy the model with the best val performance" in lines
    best = torch.load(tmp_path / "model" / "model-best.pth.tar", weights_only=True)
    assert best["val_result"] == pytest.approx(trainer.best_result)
    assert (tmp_path / "model" / "checkpoint").read_text().strip() == "model.pth.tar-3"
    for k, v in trainer.model.state_dict().items():  # the deployed weights are the best epoch's
        assert torch.equal(best["state_dict"][k], v)


def test_non_finite_loss_names_epoch_and_batch(tmp_path):
    trainer = build_toy(toy_cfg(tmp_path))
    trainer.nan_at_batch = 2
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 3"):
        trainer.train()


def test_eval_load_model_by_epoch_and_latest(tmp_path):
    trainer = build_toy(toy_cfg(tmp_path / "train", "TRAIN.CHECKPOINT_FREQ", "1"))
    trainer.train()
    ep1 = torch.load(tmp_path / "train" / "model" / "model.pth.tar-1", weights_only=True)["state_dict"]
    fresh = build_toy(toy_cfg(tmp_path / "eval"), seed=5)
    fresh.load_model(str(tmp_path / "train"), epoch=1)
    for k, v in ep1.items():
        assert torch.equal(fresh.model.state_dict()[k], v)
    fresh.load_model(str(tmp_path / "train"))  # no best file: the latest (epoch 3)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[k], v)
    with pytest.raises(FileNotFoundError, match=r"model\.pth\.tar-7"):
        fresh.load_model(str(tmp_path / "train"), epoch=7)


def test_register_model_rules(tmp_path):
    trainer = build_toy(toy_cfg(tmp_path))
    with pytest.raises(KeyError, match="duplicate"):
        trainer.register_model("model", nn.Linear(1, 1))
    assert trainer.get_model_names() == ["model"]
    with pytest.raises(KeyError, match="nope"):
        trainer.get_model_names("nope")
    trainer.set_model_mode("eval")
    assert not trainer.model.training
    trainer.set_model_mode("train")
    assert trainer.model.training


def test_load_model_rejects_mismatched_checkpoint_with_one_line(tmp_path):
    from engine.checkpoint import CheckpointError, save_checkpoint

    trainer = build_toy(toy_cfg(tmp_path / "t"))
    good = trainer.model.state_dict()
    save_checkpoint({"state_dict": {k: v[..., :2] if k.endswith("weight") else v for k, v in good.items()},
                     "epoch": 1}, str(tmp_path / "shape" / "model"))
    with pytest.raises(CheckpointError, match=r"has shape \(3, 2\), the model expects \(3, 12\)"):
        trainer.load_model(str(tmp_path / "shape"), epoch=1)
    save_checkpoint({"state_dict": {"1.weight": good["1.weight"], "extra": torch.ones(1)}, "epoch": 1},
                    str(tmp_path / "keys" / "model"))
    with pytest.raises(CheckpointError) as exc:
        trainer.load_model(str(tmp_path / "keys"), epoch=1)
    assert "1 missing key(s) ['1.bias']" in str(exc.value) and "['extra']" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_grad_scaler_path_matches_plain_fp32_and_is_checkpointed(tmp_path):
    """The amp-on-CUDA code path (GradScaler) exercised on CPU: power-of-two loss scaling is exact, so the
    weights equal an unscaled run; the scaler state goes into the checkpoint and loads weights-only."""
    plain = build_toy(toy_cfg(tmp_path / "plain", "OPTIM.MAX_EPOCH", "2"))
    plain.train()
    scaled = build_toy(toy_cfg(tmp_path / "scaled", "OPTIM.MAX_EPOCH", "2"))
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaled.train()
    for k, v in weights(plain).items():
        assert torch.equal(weights(scaled)[k], v), k
    saved = torch.load(tmp_path / "scaled" / "model" / "model.pth.tar-2", weights_only=True)
    assert saved["scaler"]["scale"] == 2.0 ** 10
    assert "scaler" not in torch.load(tmp_path / "plain" / "model" / "model.pth.tar-2", weights_only=True)
