"""Fault injection: locks under pauses, pid reuse and clock skew; OS errors from the first write on.

A run whose ``.run.lock`` was taken over while it was paused stops at its next safe point with one
line and writes nothing more; staleness uses the heartbeat's age as well as the pid; a heartbeat in
the future is named as clock skew; a moved sweep root keeps its finished jobs. Every ``OSError`` of
the lock, ``makedirs``, the TensorBoard writer (also from its thread) and ``tools/convert_checkpoint.py``
is one line; ``OPTIM.MAX_EPOCH`` below 1 is refused.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import train
from engine.runs import record
from engine.runs.locks import Lock, LockHeld, host_name
from tests.fixtures_data import make_shapes
from tests.fixtures_faults import TINY_BACKBONE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOP = ["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml",
        "--dataset-config-file", "configs/datasets/shapes.yaml", "--seed", "1", *TINY_BACKBONE,
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "TRAINER.COOP.N_CTX", "2",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "1", "TRAIN.PRINT_FREQ", "1", "TRAINER.COOP.PREC", "fp32"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock_data")
    make_shapes(root, classes=("circle", "square"), counts={"train": 2, "val": 1, "test": 1}, size=32)
    return root


def _write_gen(lock_dir, gen, **rec):
    os.makedirs(lock_dir, exist_ok=True)
    data = {"state": "held", "host": host_name(), "pid": os.getpid(), "heartbeat": time.time(), "token": "x"}
    data.update(rec)
    with open(os.path.join(lock_dir, f"gen-{gen:012d}"), "w") as f:
        json.dump(data, f)


def _one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


# ------------------------------------------------------------------ staleness: pid reuse, self, clock skew
def test_live_pid_with_an_old_heartbeat_is_stale(tmp_path, monkeypatch):
    """The failure: a stale lock whose pid is alive again (pid reuse) refused forever."""
    monkeypatch.setenv("HARNESS_LOCK_HEARTBEAT", "3600")
    path = str(tmp_path / "l")
    _write_gen(path, 5, pid=os.getppid(), heartbeat=time.time() - 3 * 86400)  # alive, heartbeat 3 days old
    lock = Lock(path)
    assert "no heartbeat for 259200 s (its pid is alive: reused, or the holder is paused)" in \
        lock.stale_reason(json.load(open(os.path.join(path, "gen-000000000005"))), 5)
    lock.acquire()
    assert lock.gen == 6
    lock.release()
    _write_gen(path, 9, pid=os.getppid())  # alive with a fresh heartbeat: held
    with pytest.raises(LockHeld, match=f"in use by pid {os.getppid()} on host "):
        Lock(path).acquire()


def test_a_new_run_never_blocks_itself(data_root, tmp_path, monkeypatch, capsys):
    """The failure: a container restarted as the same pid (and host name) refused its own old lock."""
    monkeypatch.setenv("HARNESS_LOCK_HEARTBEAT", "3600")
    out = tmp_path / "out"
    _write_gen(str(out / ".run.lock"), 3, pid=os.getpid(), token="left-by-the-previous-container",
               heartbeat=time.time() - 3 * 86400)
    assert train.main(["--root", str(data_root), "--output-dir", str(out), "--no-train", *COOP]) == 0
    assert Lock(str(out / ".run.lock")).holder() is None


def test_heartbeat_in_the_future_is_named_clock_skew(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_LOCK_TIMEOUT", "300")
    path = str(tmp_path / "l")
    _write_gen(path, 2, host="node-far", pid=4242, heartbeat=time.time() + 3600)
    with pytest.raises(LockHeld) as e:
        Lock(path, what="the output folder X").acquire()
    msg = str(e.value)
    assert msg.startswith("the output folder X is locked by pid 4242 on host node-far with a heartbeat 3600 s "
                          "in the future") or msg.startswith("the output folder X is locked by pid 4242 on host "
                                                             "node-far with a heartbeat 3599 s in the future")
    assert "clocks of this host and node-far disagree (clock skew)" in msg and "synchronise the clocks (NTP)" in msg
    assert f"rm -r {path}" in msg and " -" not in msg.split("heartbeat")[1].split("s in")[0]


# ------------------------------------------------------------------ a run that loses its lock
def _snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file outside the lock folder."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        if ".run.lock" in dirpath:
            continue
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def test_run_that_lost_its_lock_stops_and_writes_nothing_more(data_root, tmp_path, monkeypatch, capsys):
    """The failure: a run paused past the timeout, its lock taken over, kept writing checkpoints, log.txt,
    metrics.json and TensorBoard into the folder another run owned; both exited 0."""
    from engine import trainer as trainer_mod

    monkeypatch.setenv("HARNESS_LOCK_HEARTBEAT", "3600")
    out = tmp_path / "out"
    seen = {}
    original = trainer_mod.TrainerBase.model_update

    def take_over_at_step_2(self, *args, **kwargs):
        seen["n"] = seen.get("n", 0) + 1
        if seen["n"] == 2:  # another run takes the lock over (this one "was paused")
            if self._writer is not None:
                self._writer.flush()  # the events written so far are on disk: the snapshot sees them
            lock_dir = str(out / ".run.lock")
            top = max(int(n[4:]) for n in os.listdir(lock_dir) if n.startswith("gen-"))
            _write_gen(lock_dir, top + 1, host="node-new", pid=777, token="other")
            seen["before"] = _snapshot(out)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_mod.TrainerBase, "model_update", take_over_at_step_2)
    capsys.readouterr()
    rc = train.main(["--root", str(data_root), "--output-dir", str(out), *COOP, "OPTIM.MAX_EPOCH", "2",
                     "TRAIN.CHECKPOINT_FREQ", "1"])
    line = _one_line(capsys)
    assert rc == 2 and seen["n"] == 2
    assert line.startswith(f"error: this run lost the output folder {out}: its lock {out / '.run.lock'} was taken "
                           "over by pid 777 on host node-new while this run was paused")
    assert "it stops here and writes nothing more there" in line
    assert _snapshot(out) == seen["before"]  # no checkpoint, log line, metrics.json or event after the take-over
    assert not (out / "metrics.json").exists() and not (out / "prompt_learner" / "model.pth.tar-1").exists()
    assert Lock(str(out / ".run.lock")).holder()[1]["host"] == "node-new"  # the other run's lock is untouched


@pytest.mark.slow
def test_sigstopped_run_whose_lock_was_taken_stops_on_sigcont(data_root, tmp_path, monkeypatch):
    """The real pause: SIGSTOP past the lock timeout, another holder, SIGCONT: one line, exit 2, nothing written."""
    out, log = tmp_path / "out", tmp_path / "out" / "log.txt"
    monkeypatch.setenv("HARNESS_LOCK_TIMEOUT", "2")
    env = dict(os.environ, HARNESS_LOCK_HEARTBEAT="0.5", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), "--root", str(data_root),
                             "--output-dir", str(out), *COOP, "OPTIM.MAX_EPOCH", "200"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (log.exists() and "epoch [1/200] batch [2/" in log.read_text()):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.2)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3)  # past the timeout: the heartbeat is stale although the pid lives
        other = Lock(str(out / ".run.lock"), what="the folder").acquire()  # taken over by this process
        before = {k: v for k, v in _snapshot(out).items() if not k.startswith("tensorboard")}
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        other.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: this run lost the output folder {out}: its lock ")
    assert f"taken over by pid {os.getpid()}" in lines[0]
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith("tensorboard")}
    assert after == before and not (out / "metrics.json").exists()


# ------------------------------------------------------------------ one line for every OS error
def test_output_dir_that_is_a_file_is_one_line(data_root, tmp_path, capsys):
    target = tmp_path / "out"
    target.write_text("I am a file")
    assert train.main(["--root", str(data_root), "--output-dir", str(target), "--no-train", *COOP]) == 2
    assert _one_line(capsys) == (f"error: cannot create {target / '.run.lock'}: {target} is a file, not a folder; "
                                 "choose another output folder (--output-dir) or move the file away")


@pytest.mark.parametrize("fault", ["read_only", "disk_full_at_start"])
def test_lock_on_a_read_only_or_full_disk_is_one_line_and_leaves_no_temp_file(data_root, tmp_path, monkeypatch,
                                                                               capsys, fault):
    """The failure: the lock code failed before log.txt opened, with a traceback and 0-byte .tmp-* files."""
    import engine.runs.locks as locks

    out = tmp_path / "out"
    if fault == "read_only":  # root ignores permission bits: the refusal the kernel would give
        real = os.makedirs

        def makedirs(path, *a, **k):
            if str(path).startswith(str(out)):
                raise PermissionError(errno.EACCES, "Permission denied", str(out))
            return real(path, *a, **k)

        monkeypatch.setattr(locks.os, "makedirs", makedirs)
    else:
        def fsync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(locks.os, "fsync", fsync)
    assert train.main(["--root", str(data_root), "--output-dir", str(out), "--no-train", *COOP]) == 2
    line = _one_line(capsys)
    what = "permission denied writing" if fault == "read_only" else "no space left on the device writing"
    assert line.startswith(f"error: {what} {out / '.run.lock'} (folder {out}")
    if fault == "disk_full_at_start":
        assert os.listdir(out / ".run.lock") == []  # no 0-byte temp file, no generation
        assert not (out / "log.txt").exists()


def test_sweep_on_an_output_root_it_cannot_create_is_one_line(tmp_path):
    blocker = tmp_path / "root"
    blocker.write_text("a file where the output root should be")
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--protocol", "base2new",
                        "--methods", "CoOp", "--datasets", "dtd", "--seeds", "1", "--output-root",
                        str(blocker / "sweep"), "--data", str(tmp_path / "data")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"ERROR: cannot create {blocker / 'sweep'}: {blocker} is a file, not a folder")


def test_sweep_on_a_read_only_output_root_is_one_line(tmp_path, monkeypatch, capsys):
    """The failure: a traceback (root ignores permission bits here, so the kernel's refusal is injected)."""
    import importlib.util

    import repro.runner as runner

    root = tmp_path / "ro"
    real = os.makedirs

    def makedirs(path, *a, **k):
        if str(path).startswith(str(root)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(runner.os, "makedirs", makedirs)
    spec = importlib.util.spec_from_file_location("sweep_tool", os.path.join(REPO, "tools", "sweep.py"))
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    rc = sweep.main(["--protocol", "base2new", "--methods", "CoOp", "--datasets", "dtd", "--seeds", "1",
                     "--output-root", str(root), "--data", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"ERROR: permission denied writing {root} (folder {tmp_path}); fix the folder's permissions")


@pytest.mark.parametrize("when", [1, 4])  # the first event (the writer's start) / mid-run
def test_tensorboard_enospc_is_the_runs_one_line(data_root, tmp_path, monkeypatch, capsys, when):
    """The failure: two tracebacks, one from the writer's thread."""
    from tensorboard.summary.writer import record_writer

    real = record_writer.RecordWriter.write
    calls = {"n": 0}

    def write(self, data):
        calls["n"] += 1
        if calls["n"] >= when:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    out = tmp_path / "out"
    rc = train.main(["--root", str(data_root), "--output-dir", str(out), *COOP, "OPTIM.MAX_EPOCH", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and "Exception in thread" not in err, err
    assert err.startswith(f"error: no space left on the device writing {out / 'tensorboard'}")
    assert err.strip() in (out / "log.txt").read_text()


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_max_epoch_below_one_is_refused_before_anything_is_written(data_root, tmp_path, capsys, epochs):
    """The failure: -1 exited 0 with metrics.json of an untrained model; 0 was a ZeroDivisionError."""
    out = tmp_path / "out"
    assert train.main(["--root", str(data_root), "--output-dir", str(out), *COOP, "OPTIM.MAX_EPOCH", epochs]) == 2
    assert _one_line(capsys) == (f"error: bad value for OPTIM.MAX_EPOCH: {epochs}; expected at least 1 (the number "
                                 "of training epochs; to evaluate without training use --eval-only)")
    assert not out.exists()


@pytest.fixture(scope="module")
def convert_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_tool", os.path.join(REPO, "tools", "convert_checkpoint.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["truncated", "empty", "not_torch", "output_in_a_file"])
def test_convert_checkpoint_is_one_line(tmp_path, capsys, convert_tool, kind):
    """The failure: a traceback for a truncated, empty or non-torch input."""
    import torch

    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"ctx": torch.zeros(64)}, "epoch": 1}, good)
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    data = good.read_bytes()
    src.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not_torch": b"hello, not a checkpoint",
                     "output_in_a_file": data}[kind])
    if kind == "output_in_a_file":
        (tmp_path / "blocker").write_text("x")
        dst = tmp_path / "blocker" / "out.pth"
    capsys.readouterr()
    assert convert_tool.main([str(src), str(dst)]) == 2
    err = _one_line(capsys)
    expected = {"truncated": f'error: Cannot load checkpoint "{src}": truncated (',
                "empty": f'error: Cannot load checkpoint "{src}": empty file (0 bytes)',
                "not_torch": f'error: Cannot load checkpoint "{src}": damaged or not a PyTorch checkpoint',
                "output_in_a_file": f"error: cannot create {dst}: {tmp_path / 'blocker'} is a file, not a folder"}
    assert err.startswith(expected[kind]) and not dst.exists()


# ------------------------------------------------------------------ a moved sweep root
def test_moved_output_root_keeps_its_finished_eval_jobs(tmp_path):
    """The failure: every finished test job of a moved root failed as "other settings" (absolute --model-dir)."""
    def eval_args(root):
        return ["--root", str(tmp_path / "data"), "--output-dir", str(root / "test_new" / "seed1"), "--eval-only",
                "--model-dir", str(root / "train_base" / "seed1"), "--load-epoch", "2", *COOP]

    old, new = tmp_path / "old", tmp_path / "moved" / "root"
    for sub in ("test_new/seed1", "train_base/seed1"):
        (old / sub).mkdir(parents=True)
    args = eval_args(old)
    settings = record.requested_settings(args, REPO)  # what train.py records (record.effective_settings)
    record.write_record(str(old / "test_new" / "seed1"), "eval", settings, {"output_dir": str(old / "test_new/seed1")})
    assert record.check_settings(str(old / "test_new" / "seed1"), args, REPO, "finished", "h") is None
    new.parent.mkdir()
    shutil.move(str(old), str(new))
    assert record.check_settings(str(new / "test_new" / "seed1"), eval_args(new), REPO, "finished", "h") is None
    # an old record (absolute paths only): still read, relative to the --output-dir it was run with
    path = new / "test_new" / "seed1" / record.RECORD_FILE
    data = json.loads(path.read_text())
    assert data["eval"]["relative"] == {"--model-dir": "../../train_base/seed1"}
    del data["eval"]["relative"]
    path.write_text(json.dumps(data))
    assert record.check_settings(str(new / "test_new" / "seed1"), eval_args(new), REPO, "finished", "h") is None
    # another model dir is still another setting
    other = eval_args(new)
    other[other.index("--model-dir") + 1] = str(tmp_path / "elsewhere")
    problem = record.check_settings(str(new / "test_new" / "seed1"), other, REPO, "finished", "h")
    assert problem and "--model-dir" in problem
