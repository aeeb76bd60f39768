"""CoOp's few-shot protocol: the plan (per-K CoOp configs, zero-shot once), ``scripts/<method>/fewshot.sh``,
the official ``scripts/coop/main.sh`` / ``eval.sh`` and ``scripts/zsclip/zeroshot.sh`` (argument order
and output layout, with a recording stub train.py), and a real few-shot sweep on Shapes (tiny random
backbone) that prints the accuracy-vs-shots table and writes the plot."""
import json
import os
import subprocess
import sys

import pytest

from repro.plan import Context, build_plan
from fixtures_repro import make_config_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(REPO, "tools", "sweep.py")

# records its argv and writes a finished log (and a checkpoint when training)
STUB = """
import json, os, sys
import yaml
sys.path[:0] = [os.environ["STUB_TESTS_DIR"], os.path.dirname(os.environ["STUB_TESTS_DIR"])]
from fixtures_repro import log_lines
args = sys.argv[1:]
with open(os.environ["ARGV_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
opt = lambda k: args[args.index(k) + 1] if k in args else None
out = opt("--output-dir")
os.makedirs(out, exist_ok=True)
if "--eval-only" not in args:
    ep = opt("OPTIM.MAX_EPOCH") or str(yaml.safe_load(open(opt("--config-file")))["OPTIM"]["MAX_EPOCH"])
    os.makedirs(os.path.join(out, "prompt_learner"), exist_ok=True)
    open(os.path.join(out, "prompt_learner", "model.pth.tar-" + ep), "w").close()
with open(os.path.join(out, "log.txt"), "a") as f:
    f.write("\\n".join(log_lines(55.5, kind="eval" if "--eval-only" in args else "train")) + "\\n")
"""


@pytest.fixture
def croot(tmp_path):
    root = make_config_root(str(tmp_path / "cfgroot"))
    for name, ep in (("vit_b16_ep50", 50), ("vit_b16_ep100", 100), ("vit_b16", 200)):
        with open(os.path.join(root, "configs", "trainers", "CoOp", name + ".yaml"), "w") as f:
            f.write(f"OPTIM:\n  NAME: sgd\n  MAX_EPOCH: {ep}\n")
    return root


def _script(tmp_path, croot, script, *args):
    stub = tmp_path / "stub.py"
    stub.write_text(STUB)
    env = dict(os.environ, SWEEP_TRAIN_PY=str(stub), ARGV_LOG=str(tmp_path / "argv.jsonl"),
               STUB_TESTS_DIR=os.path.dirname(os.path.abspath(__file__)), CONFIG_ROOT=croot,
               OUTPUT_ROOT=str(tmp_path / "out"), DATA=str(tmp_path / "data"))
    env.pop("CFG", None)
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path))


def _calls(tmp_path):
    path = tmp_path / "argv.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _opt(args, key):
    return args[args.index(key) + 1]


def test_fewshot_plan(tmp_path, croot):
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"),
                  config_root=croot)
    jobs = build_plan(ctx, ["fewshot"], ["CoOp", "ZeroshotCLIP", "MaPLe"], ["imagenet", "dtd"], [1, 2])
    coop = [j for j in jobs if j.trainer == "CoOp" and j.seed == 1 and j.dataset == "dtd"]
    assert [(j.shots, j.cfg) for j in coop] == [(1, "vit_b16_ep50"), (2, "vit_b16_ep100"), (4, "vit_b16_ep100"),
                                                (8, "vit_b16"), (16, "vit_b16")]
    assert {j.cfg for j in jobs if j.trainer == "CoOp" and j.dataset == "imagenet"} == {"vit_b16_ep50"}
    assert coop[2].id == "fewshot/dtd/shots_4/CoOp/vit_b16_ep100/seed1" and coop[2].log_kind == "train"
    assert coop[2].args[-2:] == ["DATASET.NUM_SHOTS", "4"] and "SUBSAMPLE" not in " ".join(coop[2].args)
    zs = [j for j in jobs if j.trainer == "ZeroshotCLIP"]
    assert [(j.dataset, j.seed, j.shots) for j in zs] == [("imagenet", 1, 0), ("dtd", 1, 0), ("imagenet", 2, 0),
                                                         ("dtd", 2, 0)]
    assert all("--eval-only" in j.args and "DATASET.NUM_SHOTS" not in j.args for j in zs)
    assert {j.cfg for j in jobs if j.trainer == "MaPLe"} == {"vit_b16_c2_ep5_batch4_2ctx"}
    assert len(jobs) == 2 * 2 * 5 + 4 + 2 * 2 * 5
    assert [j.trainer for j in jobs][:10] == ["CoOp"] * 10  # protocol -> method -> seed -> dataset -> shots


def test_fewshot_script_main_eval_and_zeroshot(tmp_path, croot):
    r = _script(tmp_path, croot, "coop/fewshot.sh", "dtd", "1", "4", "OPTIM.MAX_EPOCH", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    (args,) = _calls(tmp_path)
    assert _opt(args, "--output-dir") == str(tmp_path / "out/fewshot/dtd/shots_4/CoOp/vit_b16_ep100/seed1")
    assert args[-4:] == ["DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2"]
    r = _script(tmp_path, croot, "coop/fewshot.sh", "dtd", "1")
    assert r.returncode == 2 and "fewshot needs a SHOTS" in r.stderr
    # CoOp's main.sh DATASET CFG CTP NCTX SHOTS CSC: seeds 1-3 in the official layout
    r = _script(tmp_path, croot, "coop/main.sh", "imagenet", "vit_b16_ep50", "end", "16", "16", "False")
    assert r.returncode == 0, r.stdout + r.stderr
    main = _calls(tmp_path)[1:]
    tree = tmp_path / "out/imagenet/CoOp/vit_b16_ep50_16shots/nctx16_cscFalse_ctpend"
    assert [_opt(a, "--output-dir") for a in main] == [str(tree / f"seed{s}") for s in (1, 2, 3)]
    assert [_opt(a, "--seed") for a in main] == ["1", "2", "3"]
    assert main[0][-8:] == ["TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False",
                            "TRAINER.COOP.CLASS_TOKEN_POSITION", "end", "DATASET.NUM_SHOTS", "16"]
    r = _script(tmp_path, croot, "coop/main.sh", "imagenet", "vit_b16_ep50", "end", "16", "16", "False")
    assert r.returncode == 0 and r.stdout.count("skipping") == 3 and len(_calls(tmp_path)) == 4
    # eval.sh DATASET CFG: the ImageNet model of main.sh, at the config's last epoch, seeds 1-3
    r = _script(tmp_path, croot, "coop/eval.sh", "dtd", "vit_b16_ep50")
    assert r.returncode == 0, r.stdout + r.stderr
    ev = _calls(tmp_path)[4:]
    ev_tree = tmp_path / "out/evaluation/CoOp/vit_b16_ep50_16shots/nctx16_cscFalse_ctpend/dtd"
    assert [_opt(a, "--output-dir") for a in ev] == [str(ev_tree / f"seed{s}") for s in (1, 2, 3)]
    assert [_opt(a, "--model-dir") for a in ev] == [str(tree / f"seed{s}") for s in (1, 2, 3)]
    assert {_opt(a, "--load-epoch") for a in ev} == {"50"} and all("--eval-only" in a for a in ev)
    # zeroshot.sh DATASET CFG: ZeroshotCLIP/CFG/DATASET, no seed, CoOp's config for the input pipeline
    r = _script(tmp_path, croot, "zsclip/zeroshot.sh", "dtd", "vit_b16")
    assert r.returncode == 0, r.stdout + r.stderr
    zs = _calls(tmp_path)[-1]
    assert _opt(zs, "--output-dir") == str(tmp_path / "out/ZeroshotCLIP/vit_b16/dtd") and "--seed" not in zs
    assert _opt(zs, "--config-file").endswith("CoOp/vit_b16.yaml") and "--eval-only" in zs
    # the collector reads the CoOp trees: main.sh runs are few-shot, eval.sh runs xd targets
    out = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(tmp_path / "out"),
                          "--format", "json"], capture_output=True, text=True, check=True).stdout
    t = json.loads(out)
    assert t["fewshot"]["methods"]["CoOp"]["datasets"]["imagenet"]["16"]["seeds"] == {"1": 55.5, "2": 55.5,
                                                                                      "3": 55.5}
    assert t["xd"]["methods"]["CoOp"]["cells"]["dtd"]["n"] == 3


TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "OPTIM.MAX_EPOCH", "1", "TRAINER.COOP.PREC", "fp32", "TRAINER.COOP.N_CTX", "4", "TRAINER.ZSCLIP.PREC", "fp32",
        "DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.slow
def test_fewshot_sweep_on_shapes_prints_table_and_plot(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_TRAIN_PY", "CFG", "CONFIG_ROOT")}
    r = subprocess.run([sys.executable, SWEEP, "--protocol", "fewshot", "--methods", "CoOp", "ZeroshotCLIP",
                        "--datasets", "shapes", "--shots", "1", "2", "--seeds", "1", "--output-root", str(out),
                        "--data", str(tmp_path / "data"), *TINY],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Sweep: 3 jobs" in r.stdout
    acc = {k: json.loads((out / "fewshot/shapes" / f"shots_{k}" / t / c / "seed1/metrics.json").read_text())["accuracy"]
           for k, t, c in ((1, "CoOp", "vit_b16_ep50"), (2, "CoOp", "vit_b16_ep100"), (0, "ZeroshotCLIP", "vit_b16"))}
    assert "## Few-shot classification" in r.stdout and "### Shapes" in r.stdout
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "0 (zero-shot)", "1 shot", "2 shots"]
    coop = [line for line in lines if line.startswith("| CoOp")]
    assert f"| {acc[1]:.2f} ± 0.00 | {acc[2]:.2f} ± 0.00 |" in coop[-1]  # the Shapes table
    assert f"| {acc[1]:.2f} " in coop[0] and f"| {acc[2]:.2f} " in coop[0]  # the Average table
    assert any(line.startswith("| ZeroshotCLIP") and f"{acc[0]:.2f} ± 0.00" in line for line in lines)
    png = out / "plots" / "fewshot_accuracy.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    t = json.loads(subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(out),
                                   "--format", "json", "--plot", str(tmp_path / "plots")],
                                  capture_output=True, text=True, check=True).stdout)["fewshot"]
    assert t["shots"] == [0, 1, 2] and t["methods"]["CoOp"]["average"] == {"0": None, "1": acc[1], "2": acc[2]}
    assert t["methods"]["ZeroshotCLIP"]["datasets"]["shapes"]["0"]["seeds"] == {"1": acc[0]}
    assert (tmp_path / "plots" / "fewshot_accuracy.png").is_file()


def test_every_method_script_folder_has_fewshot_and_reproduce():
    from repro.methods import get_method

    root = os.path.join(REPO, "scripts")
    dirs = [d for d in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, d, "base2new_train.sh"))]
    assert {"coop", "comma", "vpt", "zsclip"} <= set(dirs)
    for d in dirs:
        assert os.path.isfile(os.path.join(root, d, "fewshot.sh")), f"scripts/{d}/fewshot.sh missing"
        has_weights = not get_method(d).zero_shot
        assert os.path.isfile(os.path.join(root, d, "reproduce.sh")) == has_weights, f"scripts/{d}/reproduce.sh"
    for name in ("coop/main.sh", "coop/eval.sh", "zsclip/zeroshot.sh"):
        assert os.access(os.path.join(root, name), os.X_OK)
