"""Two CPU processes (gloo) train exactly like one process: ``torchrun --nproc_per_node 2 train.py ...``.

The two ranks are spawned with ``torch.multiprocessing`` and given torchrun's environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so ``train.main`` joins and leaves
the process group exactly as under torchrun. For CoMMA, MaPLe, CoOp (batch 4: 2 images per rank;
CoOp also evaluates on val after every epoch, on rank 0 alone), ProGrad (batch 4; two losses whose
gradients are averaged over the ranks before the projection) and CoCoOp (batch 1: replicated on
both ranks), with the tiny backbone in fp32 and the configs' random augmentation (seeded per sample
by the loader, so it does not depend on which process transforms an image): every logged loss
summary and the saved prompts equal the one-process run's (<= 1e-5 relative; the momentum buffers,
sums of gradients, <= 1e-4 of their scale); the RNG state in the checkpoint is the one-process run's;
a run resumed on two processes from a one-process checkpoint ends where the one-process run ends.
Only rank 0 writes ``log.txt``, checkpoints and other files; bf16 and amp (fp16 autocast with a GradScaler,
as on CUDA) runs log the one-process losses up to their rounding. Also: the distributed batch sampler
yields rank 0's permutation on every rank even when the ranks' RNG streams differ.
"""
import json
import os
import shutil
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

import train
from engine.checkpoint import load_checkpoint
from engine.data import build_dataset
from engine.data.distributed_sampler import GlobalBatchShard
from engine.utils import set_random_seed
from tests.fixtures_data import make_cfg, make_shapes

pytestmark = pytest.mark.slow  # subprocess runs (seconds each); CI's second pass skips them (-m 'not slow')

WORLD = 2
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "TRAIN.PRINT_FREQ", "1"]
METHODS = {
    # name: (trainer, config, checkpoint folder, opts)
    "CoMMA": ("CoMMA", "CoMMA/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner",
              ["TRAINER.COMMA.PROMPT_DEPTH", "3", "TRAINER.COMMA.PREC", "fp32", "DATASET.NUM_SHOTS", "4",
               "OPTIM.MAX_EPOCH", "2"]),
    "MaPLe": ("MaPLe", "MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", "MultiModalPromptLearner",
              ["TRAINER.MAPLE.PROMPT_DEPTH", "3", "TRAINER.MAPLE.PREC", "fp32", "DATASET.NUM_SHOTS", "4",
               "OPTIM.MAX_EPOCH", "2"]),
    "CoOp": ("CoOp", "CoOp/vit_b16_ctxv1.yaml", "prompt_learner",
             ["TRAINER.COOP.PREC", "fp32", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATASET.NUM_SHOTS", "4",
              "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1", "TEST.FINAL_MODEL", "best_val"]),
    "CoCoOp": ("CoCoOp", "CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", "prompt_learner",
               ["TRAINER.COCOOP.PREC", "fp32", "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1"]),
    # two losses, the CE gradient projected against the KL gradient: the projection must act on
    # the rank-averaged gradients to equal the one-process update (it is not linear)
    "ProGrad": ("ProGrad", "ProGrad/rn50_ep100.yaml", "prompt_learner",
                ["TRAINER.PROGRAD.PREC", "fp32", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATASET.NUM_SHOTS", "4",
                 "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.5"]),
}


# low precision through the distributed path: one epoch, losses within the precision's rounding
SHORT = ["OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2"]
LOW_PRECISION = {"CoMMA-bf16": ("CoMMA", ["TRAINER.COMMA.PREC", "bf16", *SHORT]),
                 "MaPLe-amp": ("MaPLe", ["TRAINER.MAPLE.PREC", "amp", *SHORT])}


def _argv(data_root, name, out, *extra):
    name, more = LOW_PRECISION.get(name, (name, []))
    trainer, config, _, opts = METHODS[name]
    return ["--root", data_root, "--seed", "1", "--trainer", trainer, "--output-dir", str(out),
            "--dataset-config-file", "configs/datasets/shapes.yaml",
            "--config-file", os.path.join("configs", "trainers", config), *extra, *TINY, *opts, *more]


def _run_recorded(argv):
    """``train.main(argv)`` recording every (rank-averaged) loss summary and every checkpoint save."""
    import engine.trainer as T
    import engine.training.checkpoints as C  # where the trainer's save_model calls save_checkpoint
    from engine.utils.logger import get_logger

    summaries, saves, log_files = [], [], []

    class RecordingMeter(T.MetricMeter):
        def update(self, input_dict):
            summaries.append({k: float(v) for k, v in input_dict.items()})
            super().update(input_dict)

    def recording_save(state, directory, *args, **kwargs):
        saves.append(directory)
        return original_save(state, directory, *args, **kwargs)

    original_meter, original_save = T.MetricMeter, C.save_checkpoint
    T.MetricMeter, C.save_checkpoint = RecordingMeter, recording_save
    try:
        rc = train.main(argv)
        log_files = [h.baseFilename for h in get_logger().handlers if hasattr(h, "baseFilename")]
    finally:
        T.MetricMeter, C.save_checkpoint = original_meter, original_save
    return {"rc": rc, "summaries": summaries, "saves": saves, "log_files": log_files}


def _sampler_check(rank):
    """Batches of two epochs of a shuffled sampler (batch 4: split; batch 3: replicated) when the
    ranks' torch RNGs differ (seed 100 + rank), and rank 0's next random number."""
    out = {}
    for batch_size in (4, 3):
        torch.manual_seed(100 + rank)
        shard = GlobalBatchShard(BatchSampler(RandomSampler(range(10)), batch_size, False), rank, WORLD)
        out[batch_size] = [list(shard) for _ in range(2)] + [torch.rand(1).item()]
    return out


def _worker(rank, ports, jobs, result_dir):
    """One rank: the sampler check, then ``train.main`` for every job under torchrun's environment."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", HARNESS_DIST_TIMEOUT="120")
    torch.set_num_threads(1)  # as torchrun does (OMP_NUM_THREADS=1): two ranks share the CPU cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{ports[0]}", rank=rank, world_size=WORLD)
    try:
        results = {"sampler": _sampler_check(rank)}
    finally:
        dist.destroy_process_group()
    for port, (name, argv) in zip(ports[1:], jobs):
        os.environ["MASTER_PORT"] = str(port)
        results[name] = _run_recorded(argv)
        assert not dist.is_initialized(), "train.main must leave the process group it joined"
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-process runs (in this process), then the same jobs on two spawned ranks."""
    base = tmp_path_factory.mktemp("dist")
    root = base / "data"
    make_shapes(root, classes=("circle", "square", "triangle", "star"), counts={"train": 6, "val": 2, "test": 3},
                size=32)
    root = str(root)
    for shots in (4, 2, 1):  # write the few-shot caches now, so that every run reads them (same Python RNG use)
        set_random_seed(1)
        build_dataset(make_cfg(root, "Shapes", SEED=1, DATASET__NUM_SHOTS=shots))
    single = {name: _run_recorded(_argv(root, name, base / "one" / name)) for name in [*METHODS, *LOW_PRECISION]}
    # a resume folder: the one-process CoOp run as it was after epoch 1 of 2
    resume = base / "resume"
    shutil.copytree(base / "one" / "CoOp" / "prompt_learner", resume / "prompt_learner")
    (resume / "prompt_learner" / "model.pth.tar-2").unlink()
    (resume / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    jobs = [(name, _argv(root, name, base / "two" / name)) for name in [*METHODS, *LOW_PRECISION]]
    jobs.append(("CoOp-resumed", _argv(root, "CoOp", base / "two" / "CoOp-resumed", "--resume", str(resume))))
    result_dir = base / "results"
    result_dir.mkdir()
    mp.spawn(_worker, args=(_free_ports(len(jobs) + 1), jobs, str(result_dir)), nprocs=WORLD, join=True)
    ranks = [json.loads((result_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return {"base": base, "single": single, "ranks": ranks}


def _close(a, b, rel=1e-5, abs_=1e-7):
    return abs(a - b) <= rel * max(abs(a), abs(b)) + abs_


def _state(base, kind, name, epoch):
    folder = METHODS[name.split("-")[0]][2]
    return load_checkpoint(str(base / kind / name / folder / f"model.pth.tar-{epoch}"))


def _assert_same_tensors(a, b, what, rel=1e-5):
    """Same keys; ``max|a - b| <= rel * max|a|`` per tensor (relative to the tensor's scale)."""
    assert sorted(a) == sorted(b), what
    for key in a:
        x, y = a[key].double(), b[key].double()
        assert x.shape == y.shape, (what, key)
        scale = x.abs().max().item()
        assert (x - y).abs().max().item() <= rel * scale, (what, key, (x - y).abs().max().item(), scale)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_processes_log_the_one_process_losses(runs, name):
    one = runs["single"][name]
    assert one["rc"] == 0 and one["summaries"]
    for rank, result in enumerate(runs["ranks"]):
        two = result[name]
        assert two["rc"] == 0
        assert len(two["summaries"]) == len(one["summaries"])
        for step, (a, b) in enumerate(zip(one["summaries"], two["summaries"])):
            assert list(a) == list(b)
            for key in a:
                assert _close(a[key], b[key]), (name, rank, step, key, a[key], b[key])


@pytest.mark.parametrize("name", sorted(LOW_PRECISION))
def test_low_precision_runs_through_the_distributed_path(runs, name):
    one = runs["single"][name]
    for result in runs["ranks"]:
        two = result[name]
        assert two["rc"] == 0 and len(two["summaries"]) == len(one["summaries"]) > 0
        for a, b in zip(one["summaries"], two["summaries"]):
            assert all(_close(a[k], b[k], rel=2e-2, abs_=1e-3) for k in a), (name, a, b)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_processes_save_the_one_process_checkpoint(runs, name):
    epoch = int(dict(zip(METHODS[name][3][::2], METHODS[name][3][1::2]))["OPTIM.MAX_EPOCH"])
    one, two = _state(runs["base"], "one", name, epoch), _state(runs["base"], "two", name, epoch)
    assert sorted(one) == sorted(two) and one["epoch"] == two["epoch"] == epoch
    _assert_same_tensors(one["state_dict"], two["state_dict"], f"{name} prompts")

    def momentum(ckpt):
        return {str(k): v["momentum_buffer"] for k, v in ckpt["optimizer"]["state"].items()
                if v.get("momentum_buffer") is not None}

    # momentum = summed gradients, whose class terms partly cancel: float noise of the order that
    # merely chunking the text pass differently (MODEL.TEXT_ENCODER.CHUNK_SIZE) causes in one process
    _assert_same_tensors(momentum(one), momentum(two), f"{name} optimiser state", rel=1e-4)
    assert one["scheduler"] == two["scheduler"]
    assert torch.equal(one["rng_state"]["torch"], two["rng_state"]["torch"])  # rank 0 draws as one process
    assert one["rng_state"]["python"] == two["rng_state"]["python"]


def test_resumed_two_process_run_ends_like_the_one_process_run(runs):
    assert runs["ranks"][0]["CoOp-resumed"]["rc"] == 0
    one = _state(runs["base"], "one", "CoOp", 2)
    two = _state(runs["base"], "two", "CoOp-resumed", 2)
    _assert_same_tensors(one["state_dict"], two["state_dict"], "resumed CoOp prompts")
    assert not (runs["base"] / "two" / "CoOp-resumed" / "prompt_learner" / "model.pth.tar-1").exists()
    log = (runs["base"] / "two" / "CoOp-resumed" / "log.txt").read_text()
    assert "Previous epoch: 1" in log and log.count("epoch [2/2] batch [1/4]") == 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_only_rank_0_writes_files(runs, name):
    rank0, rank1 = (result[name] for result in runs["ranks"])
    assert rank0["saves"] and rank1["saves"] == []
    assert len(rank0["log_files"]) == 1 and rank1["log_files"] == []
    log = (runs["base"] / "two" / name / "log.txt").read_text()
    one_log = (runs["base"] / "one" / name / "log.txt").read_text()
    assert log.count("Finish training") == 1 and "[rank 1]" not in log
    for line in ("=> result", "Evaluate on the *val* set", "Checkpoint saved to", "Loading trainer"):
        assert log.count(line) == one_log.count(line), line
    def files(folder):  # TensorBoard event file names hold the time, host and pid: compare their count
        return sorted(str(p.relative_to(folder)) if p.parent.name != "tensorboard" else "tensorboard/<events>"
                      for p in folder.rglob("*"))

    assert files(runs["base"] / "one" / name) == files(runs["base"] / "two" / name)


@pytest.mark.parametrize("batch_size", [4, 3])
def test_every_rank_takes_its_share_of_rank_0s_global_batches(runs, batch_size):
    torch.manual_seed(100)  # rank 0's RNG; rank 1 was seeded differently
    sampler = BatchSampler(RandomSampler(range(10)), batch_size, False)
    expected = [list(sampler) for _ in range(2)]
    after = torch.rand(1).item()
    shares = [result["sampler"][str(batch_size)] for result in runs["ranks"]]
    for epoch in range(2):
        for i, batch in enumerate(expected[epoch]):
            got = [share[epoch][i] for share in shares]
            if len(batch) % WORLD == 0:
                assert got[0] + got[1] == batch and len(got[0]) == len(got[1])
            else:
                assert got[0] == got[1] == batch  # replicated
    assert shares[0][2] == after  # rank 0 consumed its RNG exactly as a one-process run
    assert shares[1][2] == after  # and rank 1 adopted rank 0's RNG


def test_global_batch_shard_without_processes():
    batches = BatchSampler(SequentialSampler(range(10)), 4, False)  # 4, 4, 2
    assert [list(GlobalBatchShard(batches, r, 2)) for r in range(2)] == [
        [[0, 1], [4, 5], [8]], [[2, 3], [6, 7], [9]]]
    assert list(GlobalBatchShard(BatchSampler(SequentialSampler(range(3)), 3, False), 1, 2)) == [[0, 1, 2]]
    assert len(GlobalBatchShard(batches, 0, 2)) == 3
    with pytest.raises(ValueError, match="shard 2"):
        GlobalBatchShard(batches, 2, 2)


def test_one_process_helpers_are_no_ops(monkeypatch):
    from engine import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env(use_cuda=False) is False and not dist.is_initialized()
    with distributed.distributed_session(use_cuda=False) as created:
        assert created is False
    summary = {"loss": 1.5, "acc": 50.0}
    assert distributed.average_summary(summary, 4) is summary
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    distributed.average_gradients([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))
    with distributed.main_process_first():
        pass
    assert distributed.broadcast_int(7) == 7


@pytest.mark.parametrize("name,value,needle", [
    ("WORLD_SIZE", "two", "WORLD_SIZE must be an integer"),
    ("HARNESS_DIST_TIMEOUT", "-5", "HARNESS_DIST_TIMEOUT must be a positive")])
def test_bad_environment_is_one_clear_error(monkeypatch, name, value, needle):
    from engine import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("must fail before joining"))
    with pytest.raises(ValueError, match=needle):
        distributed.init_from_env(use_cuda=False)
