"""Fault injection: a full disk (ENOSPC) and permission errors while writing checkpoints, predictions
files, split and few-shot caches. Each leaves the previous complete file (or nothing), no temp file,
and one ``WriteError`` line naming the file, its folder and the bytes needed."""
import errno
import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest
import torch

import engine.utils.io as io_mod
import train
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.utils.io import WriteError, atomic_save_npz, atomic_write_json, atomic_write_text
from tests.fixtures_data import make_shapes

TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


class _FailingFile:
    """File wrapper whose writes stop with ``OSError(code)`` once ``limit`` bytes are written."""

    def __init__(self, f, limit, code):
        self._f, self._left, self._code = f, limit, code

    def write(self, data):
        if len(data) > self._left:
            self._f.write(data[: self._left])
            self._left = 0
            raise OSError(self._code, os.strerror(self._code))
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


@pytest.fixture
def full_disk(monkeypatch):
    """After ``limit`` bytes, every atomic write fails with ENOSPC (part-way through the temp file)."""
    real_fdopen = os.fdopen

    def install(limit=100, code=errno.ENOSPC):
        monkeypatch.setattr(io_mod.os, "fdopen", lambda fd, *a, **k: _FailingFile(real_fdopen(fd, *a, **k),
                                                                                 limit, code))
    return install


def _state(epoch, n=4096):
    return {"state_dict": {"ctx": torch.full((n,), float(epoch))}, "epoch": epoch}


def _temps(folder):
    return [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_checkpoint_on_a_full_disk_keeps_previous_files(tmp_path, full_disk):
    save_checkpoint(_state(1), str(tmp_path))
    before = {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)}
    full_disk(limit=1000)
    with pytest.raises(WriteError) as e:
        save_checkpoint(_state(2), str(tmp_path))
    msg = str(e.value)
    assert e.value.errno == errno.ENOSPC and "\n" not in msg
    assert f"no space left on the device writing {tmp_path / 'model.pth.tar-2'} (folder {tmp_path}: needed " in msg
    assert " free)" in msg and "--resume" in msg
    assert {p: (tmp_path / p).read_bytes() for p in os.listdir(tmp_path)} == before  # no -2, pointer unchanged
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("writer", ["predictions", "split_cache", "text"])
def test_other_result_files_on_a_full_disk(tmp_path, full_disk, writer):
    target = tmp_path / {"predictions": "predictions.npz", "split_cache": "split_zhou_X.json", "text": "a.txt"}[writer]
    write = {
        "predictions": lambda v: atomic_save_npz(str(target), logits=np.full((50, 10), v, np.float32)),
        "split_cache": lambda v: atomic_write_json(str(target), {"train": [["a.jpg", v, "x"]] * 200}),
        "text": lambda v: atomic_write_text(str(target), f"{v}\n" * 500),
    }[writer]
    write(1)
    before = target.read_bytes()
    full_disk(limit=64)
    with pytest.raises(WriteError, match=f"no space left on the device writing {target} "):
        write(2)
    assert target.read_bytes() == before and _temps(tmp_path) == []
    target.unlink()
    with pytest.raises(WriteError):
        write(3)
    assert not target.exists() and _temps(tmp_path) == []  # nothing rather than a partial file


@pytest.mark.parametrize("code,needle", [(errno.EACCES, "permission denied writing"),
                                         (errno.EROFS, "read-only file system writing"),
                                         (errno.EDQUOT, "disk quota exceeded writing")])
def test_permission_and_quota_errors_are_one_line(tmp_path, monkeypatch, code, needle):
    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    if code == errno.EDQUOT:
        monkeypatch.setattr(io_mod.os, "fsync", refuse)
    else:
        monkeypatch.setattr(io_mod.tempfile, "mkstemp", refuse)
    with pytest.raises(WriteError) as e:
        save_checkpoint(_state(1), str(tmp_path / "m"))
    assert needle in str(e.value) and str(tmp_path / "m" / "model.pth.tar-1") in str(e.value)
    assert e.value.errno == code and "\n" not in str(e.value)
    assert not (tmp_path / "m" / "model.pth.tar-1").exists() and _temps(tmp_path / "m") == []


def test_other_os_errors_are_not_disguised(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(io_mod.os, "fsync", broken)
    with pytest.raises(OSError) as e:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
    assert not isinstance(e.value, WriteError) and e.value.errno == errno.EIO
    assert os.listdir(tmp_path) == []


def test_train_py_full_disk_at_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    """ENOSPC while the checkpoint is written, through train.py: exit 2, one line, nothing half-written."""
    make_shapes(tmp_path / "data", classes=("circle", "square"), counts={"train": 4, "val": 1, "test": 2}, size=32)
    real_fsync = os.fsync

    def fsync(fd):
        if ".model.pth.tar-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    monkeypatch.setattr(io_mod.os, "fsync", fsync)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = train.main(["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "CoOp", "--output-dir", str(out),
                     "--dataset-config-file", "configs/datasets/shapes.yaml",
                     "--config-file", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", *TINY, "OPTIM.MAX_EPOCH", "1"])
    err = capsys.readouterr().err
    folder = out / "prompt_learner"
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: no space left on the device writing {folder / 'model.pth.tar-1'} (folder {folder}")
    assert sorted(os.listdir(folder)) == []  # no checkpoint, no pointer, no temp file


# ----------------------------------------------------------------------------- a real full disk
@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only); skipped where mounting is not permitted."""
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_real_full_disk(tiny_tmpfs):
    ckpt_dir = tiny_tmpfs / "prompt_learner"
    save_checkpoint(_state(1, n=16_000), str(ckpt_dir))  # ~64 KB
    with open(tiny_tmpfs / "filler", "wb") as f:  # fill the disk but ~100 KB
        f.write(b"\0" * max(0, shutil.disk_usage(str(tiny_tmpfs)).free - 100_000))
    with pytest.raises(WriteError) as e:
        save_checkpoint(_state(2, n=100_000), str(ckpt_dir))  # ~400 KB: does not fit
    msg = str(e.value)
    assert msg.startswith(f"no space left on the device writing {ckpt_dir / 'model.pth.tar-2'} (folder {ckpt_dir}: "
                          "needed ") and " free)" in msg
    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "model.pth.tar-1"]
    assert load_checkpoint(str(ckpt_dir / "model.pth.tar-1"))["epoch"] == 1
