"""tools/benchmark.py end to end on the tiny CLIP: one JSON row per method, exact trainable counts, sane timings."""
import json
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO_ROOT, "tools", "benchmark.py")

# ViT-Tiny/16 (engine/backbone/architectures.py): text width 64, vision width 128.
D_T, D_V = 64, 128
TINY_OPTS = ["INPUT.SIZE", "(32, 32)", "TRAINER.COMMA.PROMPT_DEPTH", "3", "TRAINER.VPT.PROMPT_DEPTH_VISION", "1"]


def _run(args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _expected_trainable():
    """docs/METHODS.md formulas at the overridden depths and the configs' token counts.

    CoMMA (TRAIN_GENERATOR False, n = 2, J = 3): ctx n*Dt + proj (Dt*Dv + Dv) + (J-1)*n*Dt deep text prompts.
    VPT (vit_b16_c2_ep5_batch4_4: 8 tokens, J = 1): J * 8 * Dv.
    """
    n, depth = 2, 3
    comma = n * D_T + (D_T * D_V + D_V) + (depth - 1) * n * D_T
    vpt = 1 * 8 * D_V
    return {"CoMMA": comma, "VPT": vpt}


def test_benchmark_two_methods_json(tmp_path):
    out = tmp_path / "bench" / "out.json"
    proc = _run(["--methods", "CoMMA", "VPT", "--backbone", "ViT-Tiny/16", "--classes", "5", "--steps", "2",
                 "--warmup", "1", "--device", "cpu", "--prec", "fp32", "--json", str(out), *TINY_OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert [r["method"] for r in rows] == ["CoMMA", "VPT"]

    expected = _expected_trainable()
    assert {r["method"]: r["trainable"] for r in rows} == expected
    # the same numbers the trainers themselves log while building
    logged = [int(m.replace(",", "")) for m in re.findall(r"Trainable parameters: ([\d,]+)", proc.stderr)]
    assert logged == [expected["CoMMA"], expected["VPT"]]

    for r in rows:
        assert r["classes"] == 5 and r["prec"] == "fp32" and r["device"] == "cpu"
        assert r["batch"] == 4 and r["eval_batch"] == 100  # the configs' batch sizes, not overridden
        assert r["config"].startswith(f"configs/trainers/{r['method']}/vit_b16_c2_ep5_batch4_")
        for key in ("build_s", "train_step_ms_mean", "train_step_ms_p50", "eval_img_s", "peak_mem_mib"):
            assert r[key] > 0, (r["method"], key, r[key])
        assert r["peak_mem_kind"] == "process_max_rss_approx"
    assert data["opts"] == TINY_OPTS
    assert data["environment"]["steps"] == 2 and data["environment"]["torch"]
    # the table goes to stdout (logs to stderr), one line per method after the header
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 2 and "CoMMA" in table[2] and "8,704" in table[2] and "VPT" in table[3]
    assert not list((tmp_path / "bench").glob(".*tmp"))  # atomic write left no temp file


def test_benchmark_zero_shot_and_batch_override(tmp_path):
    """ZeroshotCLIP has no optimiser (no training step); --batch-size/--eval-batch-size override the configs."""
    out = tmp_path / "zs.json"
    proc = _run(["--methods", "ZeroshotCLIP", "CoCoOp", "--backbone", "ViT-Tiny/16", "--classes", "3", "--steps",
                 "1", "--warmup", "0", "--device", "cpu", "--batch-size", "2", "--eval-batch-size", "3",
                 "--json", str(out), *TINY_OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    zs, cocoop = rows["ZeroshotCLIP"], rows["CoCoOp"]
    assert zs["trainable"] == 0 and zs["train_step_ms_mean"] is None and zs["eval_img_s"] > 0
    # CoCoOp Meta-Net E*(E//16)+E//16 + (E//16)*Dt+Dt, plus 4 ctx tokens ("a photo of a"), E = 96
    e, h = 96, 96 // 16
    assert cocoop["trainable"] == e * h + h + h * D_T + D_T + 4 * D_T
    assert cocoop["batch"] == 2 and cocoop["eval_batch"] == 3 and cocoop["train_step_ms_p50"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--methods", "NoSuchMethod"], "unknown method 'NoSuchMethod'"),
    (["--methods", "CoOp", "--steps", "0"], "--steps must be >= 1"),
    (["--methods", "CoOp", "INPUT.SIZE"], "KEY VALUE pairs"),
])
def test_benchmark_bad_input_one_line_error(tmp_path, args, needle):
    proc = _run(args, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
