"""Fault injection under a real ``torchrun --nproc_per_node 2`` (gloo, CPU): the ranks die with their
launcher (parent-death signal), and an error on one rank ends the others with one line each, no
traceback from a rank burying the error."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from engine.runs.locks import Lock
from tests.fixtures_data import make_shapes
from tests.fixtures_faults import TINY_BACKBONE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COOP = ["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/vit_b16_ep50.yaml",
        "--dataset-config-file", "configs/datasets/shapes.yaml", "--seed", "1", *TINY_BACKBONE,
        "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "TRAINER.COOP.N_CTX", "2",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "2", "TRAIN.PRINT_FREQ", "1", "TRAINER.COOP.PREC", "fp32"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun_data")
    make_shapes(root, classes=("circle", "square"), counts={"train": 2, "val": 1, "test": 1}, size=32)
    return root


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out, data_root, *opts, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), os.path.join(REPO, "train.py"), "--root", str(data_root),
           "--output-dir", str(out), *COOP, *opts]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HARNESS_LOCK_HEARTBEAT="3600"), **popen)


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_ranks_die_with_their_launcher(data_root, tmp_path):
    """The failure: killing the launcher left both ranks training as orphans."""
    out = tmp_path / "out"
    proc = _torchrun(out, data_root, "OPTIM.MAX_EPOCH", "500")
    ranks = []
    try:
        deadline = time.time() + 240
        while not ((out / "log.txt").exists() and "epoch [1/500] batch [1/" in (out / "log.txt").read_text()):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.2)
        ranks = _children(proc.pid)
        assert len(ranks) == 2
        proc.send_signal(signal.SIGKILL)  # the launcher only: nothing can run in it
        proc.wait()
        deadline = time.time() + 60
        while any(_alive(p) for p in ranks) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p for p in ranks if _alive(p)], "ranks outlived their launcher"
    finally:
        for p in ranks:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_an_error_on_one_rank_ends_the_others_in_one_line_each(data_root, tmp_path):
    """The failure: rank 0's one line (a held lock) was buried under a 30-line gloo traceback of rank 1."""
    out = tmp_path / "out"
    with Lock(str(out / ".run.lock"), what="x"):
        proc = _torchrun(out, data_root, "OPTIM.MAX_EPOCH", "1")
        _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    rank_lines = [ln for ln in err.splitlines() if ln.startswith("error: ") or ln.startswith("[rank")]
    assert not [ln for ln in err.splitlines() if ln.startswith("[rank1]:") or ln.startswith("[rank0]:")], err
    assert any(ln.startswith(f"error: the output folder {out} is in use by pid {os.getpid()}") for ln in rank_lines)
    others = [ln for ln in rank_lines if not ln.startswith(f"error: the output folder {out}")]
    assert all(ln.startswith("error: [rank 1] stopped: another rank of this torchrun run ended first (")
               or ln.startswith("error: interrupted by SIGTERM") for ln in others), others
    before_launcher = err.split("torch/distributed/elastic")[0]  # the launcher's own report follows
    assert "Traceback" not in before_launcher, err
