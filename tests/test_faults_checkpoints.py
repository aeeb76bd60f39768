"""Fault injection: damaged, foreign, stale and malicious checkpoints.

Each case is one line on stderr naming the file (exit 2, no traceback), or a warned fall-back to the
previous complete checkpoint on ``--resume``; nothing in a malicious pickle runs.
"""
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

import train
from engine.checkpoint import (CHECKSUM_KEY, CheckpointError, checkpoint_digest, latest_checkpoint_path,
                               load_checkpoint, save_checkpoint)
from engine.legacy_checkpoint import load_official_or_native
from engine.utils.io import _host_tag, remove_stale_temps
from tests.fixtures_data import make_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
METHODS = {
    "CoOp": ("CoOp/vit_b16_ctxv1.yaml", "prompt_learner", []),
    "MaPLe": ("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner", ["TRAINER.MAPLE.PROMPT_DEPTH", "3"]),
    "CoMMA": ("CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner", ["TRAINER.COMMA.PROMPT_DEPTH", "3"]),
}


# ----------------------------------------------------------------------------- helpers
def argv(method, data_root, out, *extra):
    config, _, opts = METHODS[method]
    return ["--root", data_root, "--seed", "1", "--trainer", method, "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/shapes.yaml",
            "--config-file", os.path.join("configs", "trainers", config), *extra, *TINY, *opts]


def run_cli(capsys, *args):
    """``train.main`` in-process; returns ``(rc, stderr)``."""
    capsys.readouterr()
    rc = train.main(list(args))
    return rc, capsys.readouterr().err


def assert_one_line(rc, err, *needles):
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def log_of(out):
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as f:
        return f.read()


def flip_inside_tensor(path, tensor):
    """Flip 64 bytes in the middle of ``tensor``'s bytes inside the checkpoint file (silent corruption)."""
    data = bytearray(open(path, "rb").read())
    raw = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and len(raw) >= 128
    start = at + len(raw) // 2 - 32
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_shapes(root, classes=("circle", "square", "triangle", "star"), counts={"train": 4, "val": 1, "test": 2},
                size=32)
    return str(root)


@pytest.fixture(scope="module")
def runs(data_root, tmp_path_factory):
    """A 2-epoch CoOp run saving every epoch, and a 1-epoch MaPLe run (read-only: tests copy them)."""
    base = tmp_path_factory.mktemp("runs")
    assert train.main(argv("CoOp", data_root, base / "coop", "OPTIM.MAX_EPOCH", "2",
                           "TRAIN.CHECKPOINT_FREQ", "1")) == 0
    assert train.main(argv("MaPLe", data_root, base / "maple", "OPTIM.MAX_EPOCH", "1")) == 0
    return base


def copy_run(runs, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(runs / name, dst)
    return dst


def small_state(epoch=1, n=256):
    g = torch.Generator().manual_seed(epoch)
    return {"state_dict": {"ctx": torch.randn(n, generator=g), "bias": torch.zeros(3)}, "epoch": epoch,
            "optimizer": None, "scheduler": None, "val_result": None}


# ----------------------------------------------------------------------------- unit level
def test_checksum_is_stored_and_verified(tmp_path):
    path = save_checkpoint(small_state(), str(tmp_path))
    raw = torch.load(path, weights_only=True)
    assert raw[CHECKSUM_KEY] == checkpoint_digest(raw)
    assert torch.equal(load_checkpoint(path)["state_dict"]["ctx"], small_state()["state_dict"]["ctx"])
    flip_inside_tensor(path, raw["state_dict"]["ctx"])
    assert torch.load(path, weights_only=True)["epoch"] == 1  # torch itself loads it silently
    for loader in (load_checkpoint, load_official_or_native):
        with pytest.raises(CheckpointError, match="damaged: its contents do not match the checksum") as e:
            loader(path)
        assert path in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_without_checksum_still_loads(tmp_path):
    path = str(tmp_path / "old.pth.tar")
    torch.save(small_state(), path)  # as written before checksums (and by the official code)
    assert load_checkpoint(path)["epoch"] == 1
    assert load_official_or_native(path)["epoch"] == 1


@pytest.mark.parametrize("kind,needle", [
    ("empty", "empty file (0 bytes)"),
    ("truncated", "truncated ("),
    ("half_zip_directory", "the zip directory at its end is missing"),
    ("text", "damaged or not a PyTorch checkpoint"),
    ("no_state_dict", "no 'state_dict' entry"),
])
def test_damaged_or_foreign_file_is_one_line(tmp_path, kind, needle):
    good = save_checkpoint(small_state(), str(tmp_path))
    data = open(good, "rb").read()
    path = str(tmp_path / "model.pth.tar-1")
    with open(path, "wb") as f:
        if kind == "truncated":
            f.write(data[: len(data) // 2])
        elif kind == "half_zip_directory":
            f.write(data[:-10])
        elif kind == "text":
            f.write(b"this is not a checkpoint\n")
        elif kind == "no_state_dict":
            torch.save({"weights": [torch.ones(2)], "epoch": 1}, f)
    loaders = (load_checkpoint,) if kind == "no_state_dict" else (load_checkpoint, load_official_or_native)
    for loader in loaders:
        with pytest.raises((CheckpointError, ValueError)) as e:
            loader(path)
        msg = str(e.value)
        assert needle in msg and path in msg and "\n" not in msg, msg


def test_latest_falls_back_to_previous_complete_checkpoint(tmp_path, capsys):
    for epoch in (1, 2, 3):
        save_checkpoint(small_state(epoch), str(tmp_path))
    last = str(tmp_path / "model.pth.tar-3")
    open(last, "wb").close()  # a run killed / a disk full while writing epoch 3 (older code)
    flip_inside_tensor(str(tmp_path / "model.pth.tar-2"), small_state(2)["state_dict"]["ctx"])
    capsys.readouterr()
    assert latest_checkpoint_path(str(tmp_path)) == str(tmp_path / "model.pth.tar-1")
    out = capsys.readouterr().out
    assert f"WARNING: Skipping unusable checkpoint {last}: " in out
    assert 'WARNING: Using "' + str(tmp_path / "model.pth.tar-1") + '" instead of the unusable newer ' \
        "checkpoint(s) model.pth.tar-3, model.pth.tar-2" in out
    os.remove(tmp_path / "model.pth.tar-1")
    with pytest.raises(CheckpointError, match=r"no complete checkpoint in .*model.pth.tar-3, model.pth.tar-2") as e:
        latest_checkpoint_path(str(tmp_path))
    assert "\n" not in str(e.value)


def test_pointer_to_missing_file_and_empty_pointer(tmp_path, capsys):
    save_checkpoint(small_state(1), str(tmp_path))
    (tmp_path / "checkpoint").write_text("model.pth.tar-7\n")
    assert latest_checkpoint_path(str(tmp_path)) == str(tmp_path / "model.pth.tar-1")
    (tmp_path / "checkpoint").write_text("")
    assert latest_checkpoint_path(str(tmp_path)) == str(tmp_path / "model.pth.tar-1")
    assert "pointer file" in capsys.readouterr().out


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_files_are_removed_live_ones_kept(tmp_path):
    host = _host_tag()
    stale = tmp_path / f".model.pth.tar-2.{host}-{_dead_pid()}.abcd1234.tmp"
    live = tmp_path / f".model.pth.tar-2.{host}-{os.getppid()}.abcd1234.tmp"  # a running process
    old_naming = tmp_path / ".model-best.pth.tar.k2j4h5g6.tmp"
    recent_old_naming = tmp_path / ".checkpoint.zz99yy88.tmp"
    for p in (stale, live, old_naming, recent_old_naming):
        p.write_bytes(b"partial")
    os.utime(old_naming, (1, 1))  # 1970: older than a day
    save_checkpoint(small_state(2), str(tmp_path))
    assert not stale.exists() and live.exists() and old_naming.exists()  # the write removes its own name only
    removed = remove_stale_temps(str(tmp_path))
    assert sorted(removed) == [str(old_naming)]
    assert live.exists() and recent_old_naming.exists()


def test_killed_mid_write_leaves_previous_file_and_temp_is_cleaned(tmp_path):
    """A writer killed (SIGKILL) between writing its temp file and renaming it."""
    save_checkpoint(small_state(1), str(tmp_path))
    before = (tmp_path / "model.pth.tar-1").read_bytes()
    script = (
        "import os, sys, torch\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from engine.checkpoint import save_checkpoint\n"
        "os.replace = lambda *a, **k: os.kill(os.getpid(), 9)\n"
        "save_checkpoint({'state_dict': {'w': torch.ones(4)}, 'epoch': 1}, sys.argv[1])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True)
    assert proc.returncode == -9
    temps = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".model.pth.tar-1.")
    assert (tmp_path / "model.pth.tar-1").read_bytes() == before  # the previous complete file
    assert latest_checkpoint_path(str(tmp_path)) == str(tmp_path / "model.pth.tar-1")  # resume cleans up
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


# ----------------------------------------------------------------------------- malicious pickles
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("form", ["torch_zip", "raw_pickle_p2", "raw_pickle_p4", "in_scheduler"])
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, form):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "model.pth.tar-1")
    if form == "torch_zip":
        torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": _Payload(marker)}, path)
    elif form == "in_scheduler":  # where official files hold pickled objects
        torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1, "scheduler": {"x": _Payload(marker)}}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"state_dict": _Payload(marker)}, f, protocol=2 if form.endswith("p2") else 4)
    for load in (load_checkpoint, load_official_or_native,
                 lambda p: load_official_or_native(p, trust=True)):
        try:
            out = load(path)
        except (CheckpointError, ValueError) as e:
            assert path in str(e) and "\n" not in str(e)
        else:  # --trust stands in an inert stub for every class: loads, runs nothing
            assert load is not load_checkpoint and "w" in out["state_dict"]
    (tmp_path / "checkpoint").write_text("model.pth.tar-1\n")
    with pytest.raises(CheckpointError):
        latest_checkpoint_path(str(tmp_path))
    assert not marker.exists()


def test_malicious_fewshot_caches_never_run(tmp_path, data_root, capsys):
    """A pickle in place of the JSON few-shot cache, and a legacy ``.pkl`` cache: refused / ignored."""
    from engine.data.base_dataset import DatasetError
    from engine.data.registry import build_dataset
    from tests.fixtures_data import make_cfg

    root = tmp_path / "d"
    shutil.copytree(os.path.join(data_root, "shapes"), root / "shapes")
    cfg = make_cfg(str(root), "Shapes", DATASET__NUM_SHOTS=2, SEED=1)
    cache = root / "shapes" / "split_fewshot" / "shot_2-seed_1.json"
    cache.parent.mkdir(exist_ok=True)
    marker = tmp_path / "pwned"
    with open(cache, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(DatasetError) as e:
        build_dataset(cfg)
    assert str(cache) in str(e.value) and "\n" not in str(e.value)
    os.remove(cache)
    legacy = cache.with_suffix(".pkl")
    with open(legacy, "wb") as f:
        pickle.dump(_Payload(marker), f)
    try:  # a legacy Dassl pickle cache is either ignored or imported through an allow-listed unpickler
        build_dataset(cfg)
    except DatasetError as err:
        assert str(legacy) in str(err) and "\n" not in str(err)
    assert not marker.exists()
    try:
        from engine.data.legacy_fewshot import read_dassl_pickle
    except ImportError:
        return
    import subprocess as sp

    payloads = [(os.system, (f"touch {marker}",)), (eval, (f"open({str(marker)!r}, 'w')",)),
                (sp.call, (["touch", str(marker)],))]
    for func, args in payloads:
        class Reduce:
            def __reduce__(self):
                return func, args

        for protocol in (0, 2, 4, 5):
            with open(legacy, "wb") as f:
                pickle.dump({"train": [Reduce()], "val": []}, f, protocol=protocol)
            with pytest.raises(DatasetError) as e:
                read_dassl_pickle(str(legacy))
            assert str(legacy) in str(e.value) and "\n" not in str(e.value)
            assert not marker.exists()


# ----------------------------------------------------------------------------- through train.py
@pytest.mark.parametrize("kind", ["empty", "truncated", "foreign", "flipped"])
def test_eval_only_with_damaged_checkpoint(runs, data_root, tmp_path, capsys, kind):
    run = copy_run(runs, "coop", tmp_path)
    path = run / "prompt_learner" / "model.pth.tar-2"
    if kind == "empty":
        path.write_bytes(b"")
        needle = "empty file (0 bytes)"
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:700])
        needle = "truncated"
    elif kind == "foreign":
        shutil.copy(os.path.join(data_root, "shapes", "images", "circle", "circle_000.png"), path)
        needle = "damaged or not a PyTorch checkpoint"
    else:
        flip_inside_tensor(str(path), load_checkpoint(str(path))["state_dict"]["ctx"])
        needle = "do not match the checksum"
    rc, err = run_cli(capsys, *argv("CoOp", data_root, tmp_path / "eval", "--eval-only", "--model-dir", str(run),
                                    "--load-epoch", "2"))
    assert_one_line(rc, err, str(path), needle)
    assert "=> result" not in log_of(tmp_path / "eval")


def test_eval_only_with_another_methods_checkpoint(runs, data_root, tmp_path, capsys):
    run = copy_run(runs, "maple", tmp_path)
    rc, err = run_cli(capsys, *argv("CoMMA", data_root, tmp_path / "eval", "--eval-only", "--model-dir", str(run),
                                    "--load-epoch", "1"))
    assert_one_line(rc, err, str(run / "MultiModalPromptLearner" / "model.pth.tar-1"),
                    "learned tensors are missing (prompt_learner.", "another method's checkpoint")
    log = log_of(tmp_path / "eval")
    assert "=> result" not in log and "Keys missing" not in log


def test_eval_only_with_a_checkpoint_holding_extra_learned_tensors(runs, data_root, tmp_path, capsys):
    """MaPLe trained with prompt depth 3, evaluated with depth 2: never a warning followed by an accuracy."""
    run = copy_run(runs, "maple", tmp_path)
    rc, err = run_cli(capsys, *argv("MaPLe", data_root, tmp_path / "eval", "--eval-only", "--model-dir", str(run),
                                    "--load-epoch", "1"), "TRAINER.MAPLE.PROMPT_DEPTH", "2")
    assert_one_line(rc, err, str(run / "MultiModalPromptLearner" / "model.pth.tar-1"),
                    "learned tensor(s) this model does not have (prompt_learner.compound_prompt")
    assert "=> result" not in log_of(tmp_path / "eval")


def test_resume_falls_back_to_previous_checkpoint(runs, data_root, tmp_path, capsys):
    run = copy_run(runs, "coop", tmp_path)
    last = run / "prompt_learner" / "model.pth.tar-2"
    last.write_bytes(last.read_bytes()[:900])  # killed mid-write by older code / a full disk
    (run / "prompt_learner" / f".model.pth.tar-2.{_host_tag()}-{_dead_pid()}.x1y2z3w4.tmp").write_bytes(b"half")
    rc, err = run_cli(capsys, *argv("CoOp", data_root, run, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1"))
    assert rc == 0, err
    log = log_of(run).split("new run")[-1]
    assert f"WARNING: Skipping unusable checkpoint {last}: truncated" in log
    assert "Previous epoch: 1" in log and "Finish training" in log
    assert [p for p in os.listdir(run / "prompt_learner") if p.endswith(".tmp")] == []
    assert load_checkpoint(str(last))["epoch"] == 2  # rewritten, complete
    ref = load_checkpoint(str(runs / "coop" / "prompt_learner" / "model.pth.tar-2"))["state_dict"]
    assert torch.equal(load_checkpoint(str(last))["state_dict"]["ctx"], ref["ctx"])  # same as uninterrupted


def test_resume_with_no_usable_checkpoint_stops_in_one_line(runs, data_root, tmp_path, capsys):
    run = copy_run(runs, "coop", tmp_path)
    for n in (1, 2):
        (run / "prompt_learner" / f"model.pth.tar-{n}").write_bytes(b"")
    rc, err = run_cli(capsys, *argv("CoOp", data_root, tmp_path / "new", "--resume", str(run),
                                    "OPTIM.MAX_EPOCH", "2"))
    assert_one_line(rc, err, f"no complete checkpoint in {run / 'prompt_learner'}", "model.pth.tar-2, model.pth.tar-1")


@pytest.mark.slow
def test_one_line_in_a_real_process_and_traceback_on_request(runs, data_root, tmp_path):
    run = copy_run(runs, "coop", tmp_path)
    path = run / "prompt_learner" / "model.pth.tar-2"
    path.write_bytes(b"")
    cmd = [sys.executable, "train.py", *argv("CoOp", data_root, tmp_path / "eval", "--eval-only", "--model-dir",
                                             str(run), "--load-epoch", "2")]
    env = dict(os.environ, HARNESS_TRACEBACK="0")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and str(path) in proc.stderr
    env["HARNESS_TRACEBACK"] = "1"
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CheckpointError" in proc.stderr
