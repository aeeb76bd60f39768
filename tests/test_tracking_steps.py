"""One step unit per run (training steps done) for every TensorBoard tag, the LR each step used
(warm-up included), one event file across a resume, the config as hparams and as a reloadable
``config.yaml``, and per-class accuracy / confusion counts in ``metrics.json``."""
import json
import os
import re

import pytest

import train
from engine.config import setup_cfg
from engine.runs import record
from tests.fixtures_data import make_shapes
from trainers.config import extend_cfg

TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "2",
        "OPTIM.MAX_EPOCH", "2", "TRAIN.PRINT_FREQ", "2", "TRAINER.COOP.N_CTX", "2", "TRAINER.COOP.PREC", "fp32",
        "DATALOADER.TEST.BATCH_SIZE", "8", "TRAIN.CHECKPOINT_FREQ", "1",
        "OPTIM.LR", "0.002", "OPTIM.WARMUP_EPOCH", "1", "OPTIM.WARMUP_TYPE", "constant",
        "OPTIM.WARMUP_CONS_LR", "1e-05", "TEST.PER_CLASS_RESULT", "True", "TEST.COMPUTE_CMAT", "True"]


def _args(tmp_path):
    return ["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "CoOp", "--output-dir",
            str(tmp_path / "out"), "--dataset-config-file", "configs/datasets/shapes.yaml",
            "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", *TINY]


def _event_files(out):
    return sorted(p for p in os.listdir(out / "tensorboard") if p.startswith("events.out.tfevents"))


def _scalars(out):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _plugins(out):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    tags = set()
    for name in _event_files(out):
        for event in EventFileLoader(str(out / "tensorboard" / name)).Load():
            tags.update(v.tag for v in event.summary.value if v.metadata.plugin_data.plugin_name == "hparams")
    return tags


def test_steps_lr_resume_hparams_config_and_per_class(tmp_path):
    pytest.importorskip("tensorboard")
    make_shapes(tmp_path / "data", classes=("circle", "square"), counts={"train": 4, "val": 1, "test": 3}, size=32)
    out = tmp_path / "out"
    assert train.main(_args(tmp_path)) == 0
    ev = _scalars(out)
    # 8 images, batch 2: 4 steps per epoch, a log line every 2 steps; x = training steps done
    assert [s for s, _ in ev["train/loss"]] == [2, 4, 6, 8]
    assert [s for s, _ in ev["test/accuracy"]] == [8]
    assert [v for _, v in ev["train/epoch"]] == [0.5, 1.0, 1.5, 2.0]
    # warm-up epoch: every step of epoch 1 used 1e-5, its last one included (the LR is stepped after it)
    lrs = [v for _, v in ev["train/lr"]]
    assert lrs[:2] == pytest.approx([1e-5, 1e-5]) and lrs[2:] == pytest.approx([0.002, 0.002])
    logged = [float(x) for x in re.findall(r"^epoch .* lr ([\d.e+-]+) eta", (out / "log.txt").read_text(), re.M)]
    assert logged == pytest.approx(lrs, rel=1e-4)
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= _plugins(out)
    assert len(_event_files(out)) == 1

    # per-class results and confusion counts in metrics.json
    m = json.loads((out / "metrics.json").read_text())
    assert [c["classname"] for c in m["per_class"]] == ["circle", "square"]
    assert sum(c["total"] for c in m["per_class"]) == m["total"] == 6
    assert sum(c["correct"] for c in m["per_class"]) == m["correct"]
    counts = m["confusion_matrix"]["counts"]
    assert [counts[i][i] for i in range(2)] == [c["correct"] for c in m["per_class"]]
    assert [sum(r) for r in counts] == [c["total"] for c in m["per_class"]]

    # config.yaml reloads to the same settings
    class A:
        config_file, dataset_config_file, opts = str(out / "config.yaml"), "", []
        root, output_dir, seed, trainer, backbone, head, resume = str(tmp_path / "data"), str(out), 1, "", "", "", ""
        source_domains = target_domains = transforms = None
        eval_only, model_dir, load_epoch = False, "", None
    reloaded = record.effective_settings(setup_cfg(A(), extend=extend_cfg), A())
    assert reloaded == json.loads((out / record.RECORD_FILE).read_text())["train"]["settings"]

    # resume from epoch 1 (the epoch-2 checkpoint gone): one event file, one value per step
    for name in ("prompt_learner",):
        os.unlink(out / name / "model.pth.tar-2")
        (out / name / "checkpoint").write_text("model.pth.tar-1\n")
    assert train.main(_args(tmp_path)) == 0
    assert len(_event_files(out)) == 1
    ev2 = _scalars(out)
    assert [s for s, _ in ev2["train/loss"]] == [2, 4, 6, 8]
    assert ev2["train/loss"][:2] == ev["train/loss"][:2]  # carried over from the first session
    assert [s for s, _ in ev2["test/accuracy"]] == [8]
