"""Helpers for the repro tests: synthetic Dassl logs (ours and official formats), a stub
``train.py`` that writes such logs and checkpoints, and a minimal config tree."""
from __future__ import annotations

import os
import textwrap

from repro.methods import BASE2NEW_DATASETS, DG_TARGETS, METHODS

# Per-method max epochs of the stub config tree (distinct values so load-epoch derivation is visible)
STUB_EPOCHS = {"b2n": 5, "xd": 2}


def result_block(acc: float, fmt: str = "ours", total: int = 2465) -> list:
    """``=> result`` block lines; ``ours`` = Dassl >= 0.6.2 (1 decimal), ``dassl_old`` = 2 decimals."""
    correct = round(total * acc / 100)
    if fmt == "ours":
        return ["=> result", f"* total: {total:,}", f"* correct: {correct:,}", f"* accuracy: {acc:.1f}%",
                f"* error: {100 - acc:.1f}%", f"* macro_f1: {acc - 0.5:.1f}%"]
    return ["=> result", f"* total: {total:,}", f"* correct: {correct:,}", f"* accuracy: {acc:.2f}%",
            f"* error: {100 - acc:.2f}%", f"* macro_f1: {acc - 0.5:.2f}%"]


def log_lines(acc: float, kind: str = "train", fmt: str = "ours", val_accs=()) -> list:
    """A whole log: banner, iteration lines, optional per-epoch val blocks, end signal, final block."""
    lines = ["** Arguments **", "seed: 1", "Loading trainer: CoMMA", "Loading dataset: Caltech101"]
    if kind == "train":
        for e, v in enumerate(val_accs, 1):
            lines.append(f"epoch [{e}/5] batch [20/20] time 0.1 (0.1) data 0.0 (0.0) loss 1.0 (1.0) "
                         "lr 3.5000e-03 eta 0:00:01")
            lines.append("Evaluate on the *val* set")
            lines += result_block(v, fmt)
        lines.append("Checkpoint saved to output/x/MultiModalPromptLearner/model.pth.tar-5")
        lines.append("Finish training" if fmt == "ours" else "Finished training")
        lines.append("Deploy the last-epoch model")
    lines.append("Evaluate on the *test* set")
    lines += result_block(acc, fmt)
    lines.append("Elapsed: 0:00:10")
    return lines


def write_log(run_dir: str, acc: float, kind: str = "train", fmt: str = "ours", name: str = "log.txt",
              **kw) -> str:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, name)
    with open(path, "w") as f:
        f.write("\n".join(log_lines(acc, kind, fmt, **kw)) + "\n")
    return path


def make_config_root(root: str, b2n_epochs: int = STUB_EPOCHS["b2n"], xd_epochs: int = STUB_EPOCHS["xd"],
                     extra_datasets=("shapes",)) -> str:
    """``configs/trainers/<dir>/<cfg>.yaml`` for every method and ``configs/datasets/*.yaml``."""
    for spec in METHODS.values():
        d = os.path.join(root, "configs", "trainers", spec.config_dir)
        os.makedirs(d, exist_ok=True)
        cfgs = {spec.b2n_cfg: b2n_epochs, spec.xd_cfg: xd_epochs}
        cfgs.update({c: b2n_epochs for c in spec.b2n_cfg_per_dataset.values()})
        for cfg, ep in cfgs.items():
            path = os.path.join(d, cfg + ".yaml")
            if cfg == spec.xd_cfg and cfg != spec.b2n_cfg:
                ep = xd_epochs
            with open(path, "w") as f:
                f.write(f"OPTIM:\n  NAME: sgd\n  MAX_EPOCH: {ep}\n")
    d = os.path.join(root, "configs", "datasets")
    os.makedirs(d, exist_ok=True)
    for name in tuple(BASE2NEW_DATASETS) + tuple(DG_TARGETS) + tuple(extra_datasets):
        with open(os.path.join(d, name + ".yaml"), "w") as f:
            f.write(f"DATASET:\n  NAME: {name}\n")
    return root


def stub_accuracy(dataset: str, seed: int, subsample: str) -> float:
    """Deterministic fake accuracy written by the stub (one decimal, like our logs)."""
    base = 40 + sum(map(ord, dataset)) % 50
    return round(base + 0.7 * seed + {"base": 3.0, "new": -4.0}.get(subsample, 0.0), 1)


STUB_TRAIN_PY = textwrap.dedent('''
    """Stub train.py for the sweep/script tests: Dassl CLI, writes log.txt and a checkpoint."""
    import argparse, glob, os, signal, sys
    sys.path[:0] = [os.environ["STUB_TESTS_DIR"], os.path.dirname(os.environ["STUB_TESTS_DIR"])]
    import yaml
    from fixtures_repro import log_lines, stub_accuracy

    p = argparse.ArgumentParser()
    for flag in ("--root", "--output-dir", "--seed", "--trainer", "--config-file", "--dataset-config-file",
                 "--model-dir", "--load-epoch", "--resume"):
        p.add_argument(flag)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    a = p.parse_args()
    opts = dict(zip(a.opts[0::2], a.opts[1::2]))
    out = a.output_dir
    with open(os.environ["STUB_CALLS"], "a") as f:
        f.write(out + "\\n")
    for bad in filter(None, os.environ.get("STUB_FAIL", "").split(",")):
        if bad in out:
            sys.stderr.write(f"RuntimeError: stub failure for {out}\\n")
            sys.exit(3)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "log.txt")
    kill_on = os.environ.get("STUB_KILL_PARENT_ON")
    marker = os.environ.get("STUB_KILL_MARKER", "")
    if kill_on and kill_on in out and not os.path.exists(marker):
        open(marker, "w").close()
        with open(log, "a") as f:
            f.write("epoch [1/5] batch [1/4] loss 1.0 (1.0) lr 1.0000e-05\\n")
        os.kill(os.getppid(), signal.SIGKILL)
        sys.exit(1)
    if a.eval_only and a.model_dir:
        if not glob.glob(os.path.join(a.model_dir, "*", "model.pth.tar-" + a.load_epoch)):
            sys.stderr.write(f"FileNotFoundError: no model.pth.tar-{a.load_epoch} in {a.model_dir}\\n")
            sys.exit(4)
    dataset = os.path.splitext(os.path.basename(a.dataset_config_file))[0]
    acc = stub_accuracy(dataset, int(a.seed), opts.get("DATASET.SUBSAMPLE_CLASSES", "all"))
    resumed = os.path.exists(log)
    lines = ["RESUMED"] if resumed else []
    if a.eval_only:
        lines.append(f"Loading weights (epoch = {a.load_epoch})")
        lines += log_lines(acc, kind="eval")
    else:
        with open(a.config_file) as f:
            ep = int(opts.get("OPTIM.MAX_EPOCH", yaml.safe_load(f)["OPTIM"]["MAX_EPOCH"]))
        os.makedirs(os.path.join(out, "prompt_learner"), exist_ok=True)
        open(os.path.join(out, "prompt_learner", f"model.pth.tar-{ep}"), "w").close()
        lines += log_lines(acc, kind="train")
    with open(log, "a") as f:
        f.write("\\n".join(lines) + "\\n")
''')


def write_stub(tmp_dir: str) -> str:
    path = os.path.join(tmp_dir, "stub_train.py")
    with open(path, "w") as f:
        f.write(STUB_TRAIN_PY)
    return path


def stub_env(tmp_dir: str, **extra) -> dict:
    env = dict(os.environ)
    env.update({"SWEEP_TRAIN_PY": write_stub(tmp_dir), "STUB_CALLS": os.path.join(tmp_dir, "calls.txt"),
                "STUB_TESTS_DIR": os.path.dirname(os.path.abspath(__file__))})
    env.update(extra)
    return env


def read_calls(tmp_dir: str) -> list:
    path = os.path.join(tmp_dir, "calls.txt")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip()]
