"""Every declared method through ``train.py`` with its official config, on Shapes, with the tiny backbone.

The table is derived from the method declarations (``repro.methods.METHODS``): a new
``trainers/<method>.py`` with its ``METHOD`` literal and YAML configs is covered without an edit here.
For each method: ``--no-train`` builds and logs the trainable-parameter count without training or
testing; a one-epoch base-class run trains, saves the last epoch and prints the result block; then
``--eval-only --model-dir`` on the novel classes loads that checkpoint and prints its own block.
Also: a value that only fails at build time (a prompt depth deeper than the backbone) is one line.
"""
import os
import re

import pytest

import train
from repro.methods import METHODS
from tests.fixtures_data import make_shapes

#: deepest prompt the 3-block tiny backbone takes
TINY_DEPTH = 3


def _case(spec):
    """(config, checkpoint folder or None, opts capping every ``*PROMPT_DEPTH*`` key at the tiny depth)."""
    from trainers.config import method_declarations

    decl = next(d for d in method_declarations() if d["key"] == spec.key)
    opts = []
    for key, value in decl["config"].items():
        if "PROMPT_DEPTH" in key and isinstance(value, int) and value > 0:
            opts += [f"TRAINER.{spec.node}.{key}", str(TINY_DEPTH)]
    return f"{spec.config_dir}/{spec.b2n_cfg}.yaml", spec.checkpoint, opts


CASES = {spec.trainer: _case(spec) for spec in METHODS.values()}
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1"]
RESULT = re.compile(r"^=> result\n\* total: ([\d,]+)\n\* correct: ([\d,]+)\n\* accuracy: ([\d.]+)%$", re.M)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_shapes(root, classes=("circle", "square", "triangle", "star"), counts={"train": 6, "val": 2, "test": 3},
                size=32)
    return str(root)


def run(method, data_root, out, *extra):
    config, _, opts = CASES[method]
    argv = ["--root", data_root, "--seed", "1", "--trainer", method, "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/shapes.yaml",
            "--config-file", os.path.join("configs", "trainers", config), *extra, *TINY, *opts]
    return train.main(argv)


def log_of(out):
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("method", sorted(CASES))
def test_no_train_builds_only(method, data_root, tmp_path):
    assert run(method, data_root, tmp_path / "o", "--no-train") == 0
    log = log_of(tmp_path / "o")
    assert f"Loading trainer: {method}" in log
    if method != "ZeroshotCLIP":
        assert re.search(r"^Trainable parameters: [1-9][\d,]*$", log, re.M)
    assert "=> result" not in log and "Finish training" not in log


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_train_base_then_evaluate_novel(method, data_root, tmp_path):
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    assert run(method, data_root, train_dir, "DATASET.SUBSAMPLE_CLASSES", "base") == 0
    log = log_of(train_dir)
    blocks = RESULT.findall(log)
    assert len(blocks) == 1 and blocks[0][0] == "6"  # 2 base classes x 3 test images
    folder = CASES[method][1]
    if folder is None:  # zero-shot: nothing to train, nothing saved
        assert "nothing to train" in log
        return
    assert "Finish training" in log
    assert (train_dir / folder / "model.pth.tar-1").is_file()
    assert (train_dir / folder / "checkpoint").read_text().strip() == "model.pth.tar-1"

    rc = run(method, data_root, test_dir, "--eval-only", "--model-dir", str(train_dir), "--load-epoch", "1",
             "DATASET.SUBSAMPLE_CLASSES", "new")
    assert rc == 0
    log = log_of(test_dir)
    assert f'Loading weights to {folder} from "{train_dir / folder / "model.pth.tar-1"}"' in log
    assert "Keys missing" not in log and "Unexpected keys" not in log
    blocks = RESULT.findall(log)
    assert len(blocks) == 1 and blocks[0][0] == "6"  # 2 novel classes x 3 test images


def test_build_time_value_error_is_one_line(data_root, tmp_path, capsys):
    config = os.path.join("configs", "trainers", "CoMMA", "vit_b16_c2_ep5_batch4_2ctx.yaml")
    argv = ["--root", data_root, "--trainer", "CoMMA", "--output-dir", str(tmp_path / "o"),
            "--dataset-config-file", "configs/datasets/shapes.yaml", "--config-file", config, *TINY]
    assert train.main(argv) == 2  # official PROMPT_DEPTH 9 > the tiny backbone's 3 blocks
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PROMPT_DEPTH" in err[0] and "9" in err[0]
