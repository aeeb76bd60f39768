"""tools/benchmark.py and scripts/gpu_check.sh end to end on the tiny CLIP (CPU).

Exact trainable counts, per-phase fields, text-encoder rows x positions from real class names,
whole-test-set estimates computed from the measured parts, one child process per phase under
``--isolate``, another checkout measured through ``--code-root`` (a git worktree of HEAD), the GPU
check script's CPU mode writing its one JSON file, and one-line errors. No timing is asserted.
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "tools", "benchmark.py")
GPU_CHECK = os.path.join(REPO_ROOT, "scripts", "gpu_check.sh")

# ViT-Tiny/16 (engine/backbone/architectures.py): text width 64, vision width 128.
D_T, D_V = 64, 128
TINY = ["--backbone", "ViT-Tiny/16", "--device", "cpu", "--prec", "fp32"]
TINY_OPTS = ["INPUT.SIZE", "(32, 32)", "TRAINER.COMMA.PROMPT_DEPTH", "3", "TRAINER.MAPLE.PROMPT_DEPTH", "3",
             "TRAINER.VPT.PROMPT_DEPTH_VISION", "1"]
#: the first three are short; the fourth is long and must not count when --classes 3
NAMES = ["tench", "goldfish", "great white shark", "American Staffordshire Terrier with a long descriptive name"]


def _run(args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _table_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("|")]


def _coop_prompt_length(names):
    """Positions a CoOp pass needs for ``names`` (CTX_INIT "a photo of a"): max EOT index + 1."""
    from engine.backbone import tokenize
    from trainers.templates import format_classname

    prompts = [f"a photo of a {format_classname(n)}." for n in names]
    return int(tokenize(prompts).argmax(dim=-1).max()) + 1


@pytest.fixture(scope="module")
def head_worktree(tmp_path_factory):
    """A detached ``git worktree`` of HEAD (removed afterwards); skip without git or a git checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not available")
    probe = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the repository is not a git checkout")
    path = str(tmp_path_factory.mktemp("worktree") / "before")
    subprocess.run(["git", "-C", REPO_ROOT, "worktree", "add", "--detach", path, "HEAD"], check=True,
                   capture_output=True, text=True)
    try:
        yield os.path.realpath(path), probe.stdout.strip()
    finally:
        subprocess.run(["git", "-C", REPO_ROOT, "worktree", "remove", "--force", path], capture_output=True)


@pytest.mark.slow
def test_two_methods_in_process_json(tmp_path):
    out = tmp_path / "bench" / "out.json"
    proc = _run(["--methods", "CoMMA", "VPT", "--classes", "5", "--steps", "2", "--warmup", "1", "--eval-batches", "1",
                 "--isolate", "off", "--json", str(out), *TINY, *TINY_OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["method"] for r in rows] == ["CoMMA", "VPT"]

    # docs/METHODS.md: CoMMA (TRAIN_GENERATOR False, n = 2, J = 3) ctx + proj + deep text prompts; VPT J*8*Dv
    expected = {"CoMMA": 2 * D_T + (D_T * D_V + D_V) + 2 * 2 * D_T, "VPT": 1 * 8 * D_V}
    assert {r["method"]: r["trainable"] for r in rows} == expected
    # one build per method in this process, logging the same numbers
    logged = [int(m.replace(",", "")) for m in re.findall(r"Trainable parameters: ([\d,]+)", proc.stderr)]
    assert logged == [expected["CoMMA"], expected["VPT"]]

    for r in rows:
        assert r["classes"] == 5 and r["prec"] == "fp32" and r["device"] == "cpu" and r["classnames"] == "class i"
        assert r["batch"] == 4 and r["eval_batch"] == 100  # the configs' batch sizes, not overridden
        assert r["config"].startswith(f"configs/trainers/{r['method']}/vit_b16_c2_ep5_batch4_")
        for key in ("build_s", "train_step_ms_mean", "train_step_ms_p50", "eval_img_s", "train_peak_mem_mib",
                    "eval_peak_mem_mib", "train_mem_base_mib", "eval_set_s"):
            assert r[key] > 0, (r["method"], key, r[key])
        assert r["mem_kind"] in ("cpu_peak_rss_since_phase_start", "cpu_process_max_rss")
        assert r["train_pid"] == r["eval_pid"] and r["isolated"] is False
        assert r["code_root"] == os.path.realpath(REPO_ROOT)
    comma, vpt = rows
    # CoMMA's training pass runs the 5 class prompts; VPT's text features are fixed (no text pass)
    assert comma["train_text_rows"] == 5 and comma["train_text_passes"] == 1
    assert comma["train_text_tokens"] == 5 * comma["train_text_len"]
    assert comma["eval_text_scope"] == "once" and comma["eval_text_rows"] == 5
    assert comma["eval_set_recompute_s"] == pytest.approx(
        math.ceil(1000 / 100) * comma["eval_text_s"] + 1000 / comma["eval_img_s"])
    assert vpt["train_text_rows"] is None and vpt["eval_text_scope"] == "build"
    assert vpt["eval_set_recompute_s"] is None
    assert data["opts"] == TINY_OPTS
    env = data["environment"]
    assert env["steps"] == 2 and env["torch"] and env["phases"] == ["train", "eval"] and env["isolate"] is False
    # two tables (train, eval) on stdout, each a header, a rule and one line per method
    table = _table_lines(proc.stdout)
    assert len(table) == 2 * (2 + 2) and "CoMMA" in table[2] and "8,704" in table[2] and "VPT" in table[3]
    assert not list((tmp_path / "bench").glob(".*tmp"))  # atomic write left no temp file


def test_zero_shot_cocoop_and_batch_override(tmp_path):
    """No training step for zero-shot CLIP; CoCoOp encodes B*C prompts in every eval batch (no cache)."""
    out = tmp_path / "zs.json"
    proc = _run(["--methods", "ZeroshotCLIP", "CoCoOp", "--classes", "3", "--steps", "1", "--warmup", "0",
                 "--eval-batches", "1", "--batch-size", "2", "--eval-batch-size", "3", "--test-size", "10",
                 "--isolate", "off", "--json", str(out), *TINY, *TINY_OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    zs, cocoop = rows["ZeroshotCLIP"], rows["CoCoOp"]
    assert zs["trainable"] == 0 and zs.get("train_step_ms_mean") is None and zs["eval_img_s"] > 0
    # CoCoOp Meta-Net E*(E//16)+E//16 + (E//16)*Dt+Dt, plus 4 ctx tokens ("a photo of a"), E = 96
    e, h = 96, 96 // 16
    assert cocoop["trainable"] == e * h + h + h * D_T + D_T + 4 * D_T
    assert cocoop["batch"] == 2 and cocoop["eval_batch"] == 3 and cocoop["train_step_ms_p50"] > 0
    assert cocoop["train_text_rows"] == 2 * 3  # B*C prompts per training step
    assert cocoop["eval_text_scope"] == "per_batch" and cocoop["eval_text_rows"] == 3 * 3
    assert cocoop["eval_set_s"] == pytest.approx(10 / cocoop["eval_img_s"]) and cocoop["eval_set_recompute_s"] is None


def test_classnames_phase_train_and_token_columns(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES) + "\n\n")
    out = tmp_path / "train.json"
    proc = _run(["--methods", "CoOp", "--classes", "3", "--classnames", str(names), "--phase", "train",
                 "--batch-size", "2", "--steps", "1", "--warmup", "0", "--json", str(out), *TINY, *TINY_OPTS],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["environment"]["phases"] == ["train"] and data["environment"]["classnames"] == str(names)
    assert data["environment"]["isolate"] is False  # auto: a single measurement stays in this process
    (coop,) = data["rows"]
    assert coop["classes"] == 3 and "eval_img_s" not in coop and coop["train_step_ms_mean"] > 0
    assert coop["train_text_rows"] == 3 and coop["train_text_tokens"] == 3 * coop["train_text_len"]
    if coop["text_len_source"] == "last_shape":  # the encoder runs only up to the longest of the 3 prompts
        assert coop["train_text_len"] == _coop_prompt_length(NAMES[:3]) < _coop_prompt_length(NAMES)
    else:  # code without last_shape: every context position
        assert coop["text_len_source"] == "inferred" and coop["train_text_len"] == 77
    table = _table_lines(proc.stdout)
    assert len(table) == 2 + 1 and "train step mean (ms)" in table[0]  # the train table only


@pytest.mark.slow
def test_isolated_phases_in_a_git_worktree_of_head(tmp_path, head_worktree):
    """``--code-root`` measures another checkout; ``--isolate on`` runs each phase in its own process."""
    root, commit = head_worktree
    out = tmp_path / "before.json"
    proc = _run(["--methods", "CoOp", "--classes", "3", "--steps", "1", "--warmup", "0", "--eval-batches", "1",
                 "--batch-size", "2", "--eval-batch-size", "2", "--isolate", "on", "--code-root", root,
                 "--label", "before", "--json", str(out), *TINY, *TINY_OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert data["environment"]["code_root"] == root and data["environment"]["code_commit"] == commit
    assert row["code_root"] == root and row["code_commit"] == commit and row["label"] == "before"
    assert row["config"] == "configs/trainers/CoOp/vit_b16_ctxv1.yaml" and row["trainable"] == 4 * D_T
    # two child processes, one per phase, each with its own peak memory
    assert row["isolated"] is True and row["train_pid"] != row["eval_pid"]
    assert os.getpid() not in (row["train_pid"], row["eval_pid"])
    for phase in ("train", "eval"):
        assert row[f"{phase}_peak_mem_mib"] >= row[f"{phase}_mem_base_mib"] - 1 > 0
    assert row["text_len_source"] in ("last_shape", "inferred")
    assert "before" in _table_lines(proc.stdout)[2]


@pytest.mark.slow
def test_gpu_check_script_cpu_mode(tmp_path, head_worktree):
    """``GPU_CHECK_DEVICE=cpu``: the CUDA tests and the CUDA half of the precision suite are collected
    (and skip without CUDA), CoMMA and MaPLe are benchmarked in fp16, the benchmark runs now and in
    the earlier checkout, and everything lands in one JSON file."""
    from tests.fixtures_trainers import declared_trainers

    root, commit = head_worktree
    names = tmp_path / "names.txt"
    names.write_text("\n".join(NAMES + ["tiger shark"]) + "\n")
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", GPU_CHECK_METHODS="CoOp", OUT=str(tmp_path),
               CLASSNAMES=str(names), GPU_CHECK_BEFORE=root, GPU_CHECK_BUDGET_S="480", PYTHON=sys.executable)
    proc = subprocess.run(["bash", GPU_CHECK], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"] for s in data["steps"]] == ["cuda_tests", "precision_tests", "bench_c5_fp16", "bench_c5_fp32",
                                                  "bench_c5_config_before"]
    assert all(s["rc"] == 0 and not s["timed_out"] for s in data["steps"]), data["steps"]
    n = len(declared_trainers())
    cuda, precision = data["tests"]["cuda_tests"], data["tests"]["precision_tests"]
    assert cuda["tests"] == n * 3 * 2 and cuda["failures"] == 0 and cuda["errors"] == 0
    assert precision["tests"] == precision["skipped"] == n * 4 and precision["failures"] == precision["errors"] == 0
    assert data["tests"]["suite"] is None  # not run in CPU mode
    assert data["environment"]["device"] == "cpu" and data["environment"]["classnames"] == str(names)
    bench = {b["name"]: b for b in data["benchmarks"]}
    fp16 = bench["bench_c5_fp16"]["rows"]
    assert [(r["method"], r["prec"], r["classes"]) for r in fp16] == [("CoMMA", "fp16", 5), ("MaPLe", "fp16", 5)]
    assert all(r["train_step_ms_mean"] > 0 for r in fp16)
    after, before = bench["bench_c5_fp32"]["rows"], bench["bench_c5_config_before"]["rows"]
    assert [(r["method"], r["label"], r["classes"]) for r in after] == [("CoOp", "after", 5)]
    assert [(r["method"], r["label"], r["code_root"]) for r in before] == [("CoOp", "before", root)]
    assert after[0]["train_step_ms_mean"] > 0 and before[0]["eval_img_s"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--methods", "NoSuchMethod"], "unknown method 'NoSuchMethod'"),
    (["--methods", "CoOp", "--steps", "0"], "--steps must be >= 1"),
    (["--methods", "CoOp", "--eval-batches", "0"], "--eval-batches must be >= 1"),
    (["--methods", "CoOp", "INPUT.SIZE"], "KEY VALUE pairs"),
    (["--methods", "CoOp:n_ctx=4"], "expected NAME[:KEY=VALUE...]"),
    (["--methods", "CoOp:TRAINER.NOPE.X=1"], "TRAINER.NOPE.X"),
    (["--methods", "CoOp", "--classnames", "/no/such/names.txt"], "--classnames: no file at /no/such/names.txt"),
    (["--methods", "CoOp", "--code-root", "/no/such/checkout"], "--code-root /no/such/checkout: no engine/"),
])
def test_bad_input_one_line_error(tmp_path, args, needle):
    proc = _run(args, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_too_few_class_names_one_line_error(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("tench\ngoldfish\n")
    proc = _run(["--methods", "CoOp", "--classes", "5", "--classnames", str(names)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --classnames {names}: 2 class names, fewer than --classes 5"


def test_code_root_without_the_python_api_is_refused(tmp_path):
    """Checkouts older than engine/api.py are not supported (the tool builds through engine.api)."""
    old = tmp_path / "old"
    for package in ("engine", "trainers"):
        (old / package).mkdir(parents=True)
        (old / package / "__init__.py").write_text("")
    proc = _run(["--methods", "CoOp", "--code-root", str(old)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: --code-root {old.resolve()}: no engine/api.py (checkouts older than "
                                   "the Python API are not supported)")
