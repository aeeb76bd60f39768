"""``train.py --dassl-repo PATH -- ...`` end to end on the miniature research repo (tests/dassl_research_repo)
and a tiny random CLIP file: two epochs; SIGTERM mid-epoch + ``--resume`` equals the uninterrupted run;
``log.txt`` holds the printed lines once and names the adapters; every file loads weights-only; a repo
that cannot run stops with one line and writes nothing."""
import json
import os
import shutil

import pytest

from fixtures_dassl import RESEARCH_REPO, dassl_train, make_tiny_clip_file, make_tiny_folder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("dassl_runner")
    data = make_tiny_folder(str(base / "data"))
    weights = make_tiny_clip_file(str(base / "tiny_clip.pt"))
    return base, data, weights


def _args(setup, out, *extra, harness=()):
    base, data, weights = setup
    return ["--clip-weights", weights, *harness, "--",
            "--root", data, "--seed", "1", "--trainer", "TinyCoOp",
            "--config-file", "configs/tiny_coop.yaml", "--dataset-config-file", "configs/tiny_folder.yaml",
            "--output-dir", str(out), *extra, "DATASET.NUM_SHOTS", "4"]


@pytest.fixture(scope="module")
def runs(setup):
    """An uninterrupted run A, and run B stopped by SIGTERM after batch 3 of epoch 1, then resumed."""
    import torch  # noqa: F401  (fail early if torch is missing)

    base = setup[0]
    a, b = base / "A", base / "B"
    resumable = ("--resumable", "TinyCoOp")
    run_a = dassl_train(_args(setup, a, harness=resumable))
    stopped = dassl_train(_args(setup, b, harness=resumable), env={"TINY_REPO_SIGTERM_AT": "1:3"})
    b_files_at_stop = sorted(os.listdir(b / "prompt_learner")) if (b / "prompt_learner").is_dir() else []
    resumed = dassl_train(_args(setup, b, "--resume", str(b), harness=resumable))
    return {"A": a, "B": b, "run_a": run_a, "stopped": stopped, "resumed": resumed, "b_at_stop": b_files_at_stop}


def test_uninterrupted_run_trains_two_epochs_and_tests(runs):
    out = runs["run_a"]
    assert out.returncode == 0, out.stderr[-3000:]
    log = (runs["A"] / "log.txt").read_text()
    assert "epoch [2/2] batch [6/6]" in log and "Finish training" in log
    assert "=> result" in log and "* accuracy:" in log
    metrics = json.loads((runs["A"] / "metrics.json").read_text())
    assert metrics["trainer"] == "TinyCoOp" and metrics["epoch"] == 2 and metrics["total"] == 6
    assert sorted(os.listdir(runs["A"] / "tensorboard"))


def test_printed_lines_are_in_log_txt_once(runs):
    log = (runs["A"] / "log.txt").read_text().splitlines()
    for line in ('Initial context: "X X"', "Number of context words (tokens): 2", "Building custom CLIP",
                 "Turning off gradients in both the image and the text encoder", "** Arguments **",
                 "Train images seen by the feature pass: 12", "Collecting env info ..."):
        assert log.count(line) == 1, line
    # the run's console shows each once too (the tee does not echo the logger's own lines)
    assert runs["run_a"].stdout.splitlines().count('Initial context: "X X"') == 1
    assert runs["run_a"].stdout.count("epoch [1/2] batch [3/6]") == 1


def test_every_adapter_that_acted_is_named_once(runs):
    log = (runs["A"] / "log.txt").read_text().splitlines()
    for prefix in ("Dassl repo: ", "adapter dassl: ", "adapter datasets: ", "adapter stdout-tee: ",
                   "adapter clip-weights: clip.clip._download(ViT-B-16.pt) reads --clip-weights ",
                   "adapter resume-policy: TinyCoOp is declared resumable"):
        assert sum(line.startswith(prefix) for line in log) == 1, prefix
    import torch

    cuda_lines = sum(line.startswith("adapter cuda-redirect: ") for line in log)
    assert cuda_lines == (0 if torch.cuda.is_available() else 1)


def test_run_record_names_the_repo_and_its_commit(runs):
    record = json.loads((runs["A"] / "run_record.json").read_text())["train"]
    assert record["args"]["dassl_repo"] == os.path.realpath(RESEARCH_REPO)
    assert record["settings"]["--dassl-repo"] == os.path.realpath(RESEARCH_REPO)
    commit = record["settings"]["--dassl-commit"]
    assert commit is None or len(commit) == 40
    assert record["settings"]["TRAINER.NAME"] == "TinyCoOp" and record["settings"]["OPTIM.MAX_EPOCH"] == 2
    assert record["args"]["repo_argv"][-2:] == ["DATASET.NUM_SHOTS", "4"]
    from engine.runs.locks import Lock

    assert (runs["A"] / ".run.lock").is_dir() and Lock(str(runs["A"] / ".run.lock")).holder() is None


def test_sigterm_mid_epoch_then_resume_equals_the_uninterrupted_run(runs):
    import torch

    stopped = runs["stopped"]
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM at epoch 1/2, batch 3/6")
    assert runs["b_at_stop"] == ["interrupted.pth.tar"]
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-3000:]
    log_b = (runs["B"] / "log.txt").read_text()
    assert "Skipped the 3 batch(es) of epoch 1 trained before the stop" in log_b
    a = torch.load(runs["A"] / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    b = torch.load(runs["B"] / "prompt_learner" / "model.pth.tar-2", weights_only=True)
    assert set(a["state_dict"]) == set(b["state_dict"]) == {"ctx", "token_prefix", "token_suffix"}
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert torch.equal(a["optimizer"]["state"][0]["momentum_buffer"], b["optimizer"]["state"][0]["momentum_buffer"])
    acc = [json.loads((runs[k] / "metrics.json").read_text())["accuracy"] for k in ("A", "B")]
    assert acc[0] == acc[1]


def test_every_file_loads_weights_only(runs):
    import torch

    checked = 0
    for folder in (runs["A"], runs["B"]):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                if name.startswith("model") or name.endswith(".pth.tar"):
                    torch.load(os.path.join(dirpath, name), weights_only=True)
                    checked += 1
    assert checked == 2  # model.pth.tar-2 in A and in B (the resume point is removed at the end)


def test_eval_only_through_the_repos_own_load_model(runs, setup):
    out_dir = setup[0] / "E"
    out = dassl_train(_args(setup, out_dir, "--eval-only", "--model-dir", str(runs["A"]), "--load-epoch", "2"))
    assert out.returncode == 0, out.stderr[-3000:]
    log = (out_dir / "log.txt").read_text()
    assert f'Loading weights to prompt_learner from "{runs["A"]}/prompt_learner/model.pth.tar-2" (epoch = 2)' in log
    assert json.loads((out_dir / "metrics.json").read_text())["accuracy"] == \
        json.loads((runs["A"] / "metrics.json").read_text())["accuracy"]
    assert "eval" in json.loads((out_dir / "run_record.json").read_text())


def test_not_resumable_trainer_refuses_a_folder_with_checkpoints(runs, setup):
    folder = setup[0] / "NR"
    shutil.copytree(runs["A"], folder)
    out = dassl_train(_args(setup, folder))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {folder} holds checkpoints of TinyCoOp, which is "
                                                          "not declared resumable")


def _fake_repo(tmp_path, files):
    repo = tmp_path / "repo"
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo


@pytest.mark.parametrize("case, files, env, expected", [
    ("no train.py", {"trainers/__init__.py": ""}, {}, "no train.py in it"),
    ("no trainers", {"train.py": "print(1)"}, {}, "no trainers/ package in it"),
    ("clashing engine", {"train.py": "", "trainers/__init__.py": "", "engine/__init__.py": ""}, {},
     "its top-level engine clashes with the harness's package 'engine'"),
    ("world size", {"train.py": "", "trainers/__init__.py": ""}, {"WORLD_SIZE": "2"}, "WORLD_SIZE=2"),
    ("missing name", {"train.py": "import os\nos.makedirs('out_should_not_exist')\n"
                                  "from dassl.utils import download_url\n", "trainers/__init__.py": ""}, {},
     "imports dassl.utils.download_url, which the harness's Dassl compatibility package does not provide"),
    ("missing module", {"train.py": "from dassl.modeling import build_head\n", "trainers/__init__.py": ""}, {},
     "imports dassl.modeling, which the harness's Dassl compatibility package does not provide"),
])
def test_a_repo_that_cannot_run_gets_one_line_and_no_output(tmp_path, case, files, env, expected):
    repo = _fake_repo(tmp_path, files)
    out_dir = tmp_path / "out"
    out = dassl_train(["--", "--output-dir", str(out_dir)], repo=str(repo), env=env)
    assert out.returncode == 2, (case, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (case, lines)
    assert not out_dir.exists()
    if case == "missing name":  # the repo's own code ran up to the import; nothing of ours was written
        assert (repo / "out_should_not_exist").is_dir()


def test_double_dash_is_required(tmp_path):
    out = dassl_train(["--trainer", "X"], repo=RESEARCH_REPO)
    assert out.returncode == 2 and "(the -- is required)" in out.stderr


def test_without_clip_weights_model_backbone_path_then_the_cache(runs, setup, tmp_path):
    """No --clip-weights: the repo's _download reads MODEL.BACKBONE.PATH; without it, the CLIP cache
    ($CLIP_CACHE_DIR), and a miss there is one line saying what to pass."""
    base, data, weights = setup
    common = ["--", "--root", data, "--seed", "1", "--trainer", "TinyCoOp", "--config-file", "configs/tiny_coop.yaml",
              "--dataset-config-file", "configs/tiny_folder.yaml", "--eval-only", "--model-dir", str(runs["A"]),
              "--load-epoch", "2"]
    by_path = dassl_train(common + ["--output-dir", str(tmp_path / "P"), "DATASET.NUM_SHOTS", "4",
                                    "MODEL.BACKBONE.PATH", weights])
    assert by_path.returncode == 0, by_path.stderr[-3000:]
    log = (tmp_path / "P" / "log.txt").read_text()
    assert f"adapter clip-weights: clip.clip._download reads MODEL.BACKBONE.PATH {weights}" in log
    cache = tmp_path / "empty_cache"
    cache.mkdir()
    missing = dassl_train(common + ["--output-dir", str(tmp_path / "C"), "DATASET.NUM_SHOTS", "4"],
                          env={"CLIP_CACHE_DIR": str(cache)})
    assert missing.returncode == 2
    line = missing.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: CLIP weights ViT-B-16.pt are not in {cache} and could not be downloaded")
    assert line.endswith("pass --clip-weights FILE before -- or MODEL.BACKBONE.PATH FILE")
