"""``train.py`` end to end: the toy trainer on tiny PNGs through the real DataManager (subprocess and
in-process), ``--eval-only`` with and without ``--model-dir``, the seed stream, one-line errors."""
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

import test_engine_toy as toy
import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
BOOT = (
    "import sys; sys.path[:0] = [{repo!r}, {tests!r}]; import test_engine_toy, train; "
    "sys.exit(train.main(sys.argv[1:]))"
).format(repo=REPO, tests=TESTS)

needs_data = pytest.mark.skipif(toy.ToyImages is None, reason="engine.data is not available yet")


def toy_argv(root, out, *extra):
    return ["--root", str(root), "--output-dir", str(out), "--trainer", "toylinear", *extra,
            "DATASET.NAME", "ToyImages", "INPUT.SIZE", "(8, 8)", "OPTIM.NAME", "sgd", "OPTIM.LR", "0.1",
            "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "DATALOADER.TEST.BATCH_SIZE", "4", "USE_CUDA", "False", "TRAIN.PRINT_FREQ", "2"]


def run_cli(argv):
    return subprocess.run([sys.executable, "-c", BOOT, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def result_block(text):
    """The last result block of a log: (total, correct, accuracy string)."""
    blocks = re.findall(r"=> result\n\* total: ([\d,]+)\n\* correct: ([\d,]+)\n\* accuracy: ([\d.]+)%\n"
                        r"\* error: [\d.]+%\n\* macro_f1: [\d.]+%", text)
    assert blocks, text[-2000:]
    return blocks[-1]


@needs_data
@pytest.mark.slow
def test_train_then_eval_only_subprocess(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(toy_argv(tmp_path / "data", out, "--seed", "0", "TEST.SAVE_PREDICTIONS", "True"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert proc.stdout.strip().endswith(log.strip().splitlines()[-1])  # console mirrors log.txt
    lines = log.splitlines()
    for banner in ("** Arguments **", "** Config **", "Setting fixed seed: 0", "Loading trainer: ToyLinear",
                   "Loading dataset: ToyImages", "Finish training", "Deploy the last-epoch model",
                   "Evaluate on the *test* set"):
        assert banner in lines, banner
    assert "** System info **" in log and "seed: 0" in lines and "trainer: toylinear" in lines
    iters = [line for line in lines if line.startswith("epoch [")]
    # 12 images / bs 4 = 3 batches, PRINT_FREQ 2: only batch 2 of each epoch is logged (Dassl rule)
    assert [toy.ITER_RE.match(line).group(1, 3, 4) for line in iters] == [("1", "2", "3"), ("2", "2", "3")]
    assert f"Checkpoint saved to {out / 'model' / 'model.pth.tar-2'}" in lines
    total, correct, acc = result_block(log)
    assert total == "9"
    with np.load(out / "predictions.npz", allow_pickle=False) as f:
        assert len(f["impath"]) == 9 and f["impath"][0].endswith(os.path.join("test", "red_0.png"))
        assert int((f["logits"].argmax(1) == f["label"]).sum()) == int(correct)

    ev = tmp_path / "eval"
    proc = run_cli(toy_argv(tmp_path / "data", ev, "--seed", "0", "--eval-only", "--model-dir", str(out),
                            "--load-epoch", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev_log = (ev / "log.txt").read_text()
    ckpt = out / "model" / "model.pth.tar-2"
    assert f'Loading weights to model from "{ckpt}" (epoch = 2)' in ev_log
    assert "Finish training" not in ev_log and not (ev / "model").exists()
    assert result_block(ev_log) == (total, correct, acc)  # same weights, same test set


@needs_data
def test_seed_stream_untouched_until_dataset_build(tmp_path, capsys):
    for seed in (0, 3):
        rc = train.main(toy_argv(tmp_path / "data", tmp_path / f"o{seed}", "--seed", str(seed), "--no-train"))
        assert rc == 0
        random.seed(seed)
        assert toy.ToyImages.rng_state_at_build == random.getstate()
    assert not (tmp_path / "o0" / "model").exists()  # --no-train


@needs_data
def test_eval_only_without_model_dir_tests_model_as_built(tmp_path, capsys):
    rc = train.main(toy_argv(tmp_path / "data", tmp_path / "zs", "--seed", "1", "--eval-only"))
    assert rc == 0
    log = (tmp_path / "zs" / "log.txt").read_text()
    assert "Evaluate on the *test* set" in log and result_block(log)[0] == "9"
    assert "Loading weights" not in log


def test_unknown_trainer_subprocess_one_line_exit_2(tmp_path):
    proc = run_cli(["--trainer", "ToyLinearr", "--output-dir", str(tmp_path / "never")])
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("error: ") and 'Did you mean "ToyLinear"?' in err[0]
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--trainer", "ToyLinear", "OPTIM.LRR", "0.1"], "unknown config key OPTIM.LRR"),
    (["--trainer", "ToyLinear", "OPTIM.LR", "fast"], "OPTIM.LR"),
    (["--trainer", "ToyLinear", "--config-file", "no/such.yaml"], "config file not found: no/such.yaml"),
    (["--trainer", "ToyLinear", "DATASET.NAME", "NoSuchSet"], '"NoSuchSet" is not registered'),
    (["--trainer", "ToyLinear", "--eval-only", "--model-dir", "no/such/dir"], "Model directory not found"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    if "DATASET.NAME" in argv and toy.ToyImages is None:
        pytest.skip("engine.data is not available yet")
    rc = train.main(["--output-dir", str(tmp_path / "o"), *argv])
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], captured.err
