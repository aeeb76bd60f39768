"""Foreign methods (official code through ``train.py --dassl-repo``) in the sweep and the tables: declared
like native ones, planned with the full ``--dassl-repo ... --`` command, folders and rows tagged
``<trainer>@upstream``, shown beside the native rows and never merged with them."""
import os
import subprocess
import sys

import pytest

from fixtures_dassl import REPO_ROOT
from repro.methods import FOREIGN, METHOD_ORDER, canonical_trainer, get_method
from repro.plan import Context, PlanError, build_plan


def _fake_checkout(root, name="multimodal-prompt-learning"):
    """A folder shaped like the official MaPLe checkout (configs only; never run here)."""
    repo = root / name
    (repo / "configs" / "trainers" / "MaPLe").mkdir(parents=True)
    (repo / "configs" / "datasets").mkdir(parents=True)
    (repo / "configs" / "trainers" / "MaPLe" / "vit_b16_c2_ep5_batch4_2ctx.yaml").write_text("OPTIM:\n  MAX_EPOCH: 5\n")
    (repo / "configs" / "datasets" / "eurosat.yaml").write_text("DATASET:\n  NAME: EuroSAT\n")
    return repo


def test_seven_official_repos_are_declared_with_repo_commit_and_tag():
    assert sorted(s.folder for s in FOREIGN.values()) == sorted(
        ["CoOp@upstream", "MaPLe@upstream", "COMMA@upstream", "KgCoOp@upstream", "PromptSRC@upstream",
         "ProGrad@upstream", "TCP@upstream"])
    for spec in FOREIGN.values():
        assert spec.foreign and spec.source == "upstream" and spec.repo.count("/") == 1 and len(spec.commit) == 7
        assert spec.title.endswith("(official code)") and spec.config_root
    assert not any(k in METHOD_ORDER for k in FOREIGN)  # --methods all stays native


def test_lookup_keeps_native_and_foreign_apart():
    assert get_method("MaPLe").key == "maple" and get_method("maple@upstream").key == "maple@upstream"
    assert canonical_trainer("COMMA") == "CoMMA" and canonical_trainer("COMMA@upstream") == "COMMA@upstream"


def test_plan_prefixes_dassl_repo_and_tags_folders(tmp_path, monkeypatch):
    repo = _fake_checkout(tmp_path)
    monkeypatch.setenv("HARNESS_DASSL_REPOS", str(tmp_path))
    monkeypatch.delenv("HARNESS_REPO_MAPLE", raising=False)
    ctx = Context(repo_root=REPO_ROOT, output_root="out", data_root="data", clip_weights="w.pt",
                  upstream_numerics=True)
    jobs = build_plan(ctx, ["base2new"], ["MaPLe@upstream", "MaPLe"], ["eurosat"], [1])
    assert [j.trainer for j in jobs] == ["MaPLe"] * 4
    up_train, up_test, nat_train, _ = jobs
    out = os.path.abspath("out")
    assert up_train.args[:5] == ["--dassl-repo", str(repo), "--clip-weights", os.path.abspath("w.pt"), "--"]
    assert up_train.args[5:] == [
        "--root", os.path.abspath("data"), "--seed", "1", "--trainer", "MaPLe",
        "--dataset-config-file", "configs/datasets/eurosat.yaml",
        "--config-file", "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
        "--output-dir", f"{out}/base2new/train_base/eurosat/shots_16/MaPLe@upstream/vit_b16_c2_ep5_batch4_2ctx/seed1",
        "TRAINER.MAPLE.PREC", "fp16", "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"]
    assert "UPSTREAM_NUMERICS" not in " ".join(up_train.args)  # the official code has no such key
    assert "TRAINER.MAPLE.UPSTREAM_NUMERICS" in nat_train.args and "--dassl-repo" not in nat_train.args
    assert up_test.model_dir == up_train.output_dir and up_test.load_epoch == 5
    assert up_test.args[up_test.args.index("--model-dir") + 1] == up_train.output_dir
    assert "/MaPLe/" in nat_train.output_dir and "@" not in nat_train.output_dir


def test_missing_checkout_is_one_line(monkeypatch):
    monkeypatch.delenv("HARNESS_DASSL_REPOS", raising=False)
    monkeypatch.delenv("HARNESS_REPO_COMMA", raising=False)
    ctx = Context(repo_root=REPO_ROOT, output_root="out", data_root="data")
    with pytest.raises(KeyError, match="set HARNESS_REPO_COMMA to its checkout or HARNESS_DASSL_REPOS"):
        build_plan(ctx, ["base2new"], ["COMMA@upstream"], ["eurosat"], [1])
    with pytest.raises(PlanError, match="the released_base protocol is not available"):
        monkeypatch.setenv("HARNESS_REPO_COMMA", "/nowhere")
        from repro.plan import make_job

        make_job(ctx, "COMMA@upstream", "released_base", "eurosat", 1)


@pytest.mark.slow
def test_sweep_dry_run_prints_full_commands(tmp_path):
    _fake_checkout(tmp_path)
    env = dict(os.environ, HARNESS_DASSL_REPOS=str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "sweep.py"), "--protocol", "base2new",
                          "--methods", "MaPLe@upstream", "MaPLe", "--datasets", "eurosat", "--seeds", "1",
                          "--output-root", str(tmp_path / "o"), "--clip-weights", str(tmp_path / "w.pt"), "--dry-run"],
                         capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    commands = [line.strip() for line in out.stdout.splitlines() if "train.py" in line and "pending" not in line]
    assert len(commands) == 4
    assert commands[0].split()[2:7] == ["--dassl-repo", str(tmp_path / "multimodal-prompt-learning"),
                                        "--clip-weights", str(tmp_path / "w.pt"), "--"]
    assert "--dassl-repo" not in commands[2]
    assert out.stdout.strip().splitlines()[-1] == "4 jobs: 0 finished, 4 pending, 0 blocked"


def _result_log(folder, accuracy, train=True):
    folder.mkdir(parents=True)
    end = "Finish training\n" if train else ""
    (folder / "log.txt").write_text(f"{end}Evaluate on the *test* set\n=> result\n* total: 100\n"
                                    f"* correct: {int(accuracy)}\n* accuracy: {accuracy:.1f}%\n")


@pytest.mark.slow
def test_collect_results_shows_native_and_upstream_rows_side_by_side(tmp_path):
    root = tmp_path / "out"
    for trainer, base, new in (("MaPLe", 80.0, 60.0), ("MaPLe@upstream", 70.0, 50.0)):
        stem = ("eurosat", "shots_16", trainer, "vit_b16_c2_ep5_batch4_2ctx", "seed1")
        _result_log(root.joinpath("base2new", "train_base", *stem), base)
        _result_log(root.joinpath("base2new", "test_new", *stem), new, train=False)
    out = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "collect_results.py"), str(root),
                          "--format", "csv"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    cells = {tuple(line.split(",")[1:4]): line.split(",")[4] for line in out.stdout.splitlines()
             if line.startswith("base2new,")}
    assert cells[("MaPLe", "eurosat", "base")] == "80.0000" and cells[("MaPLe", "eurosat", "novel")] == "60.0000"
    assert cells[("MaPLe@upstream", "eurosat", "base")] == "70.0000"
    assert cells[("MaPLe@upstream", "eurosat", "novel")] == "50.0000"
    assert cells[("MaPLe@upstream", "eurosat", "hm")] == "58.3333"
