"""``--help`` of every command-line entry point describes this project: no Dassl leftovers
("CNN backbone"), no reStructuredText markup, the flags explained."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = sorted(f for f in os.listdir(os.path.join(REPO, "tools")) if f.endswith(".py") and not f.startswith("_"))


def _help(script):
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("script", ["train.py", "parse_test_res.py"] + [f"tools/{t}" for t in TOOLS])
def test_help_has_no_markup_and_no_dassl_leftovers(script):
    text = _help(script)
    assert text.startswith("usage: ")
    for leftover in ("``", ":data:", ":func:", ":class:", "CNN", "name of head", "modify config options"):
        assert leftover not in text, f"{script} --help shows {leftover!r}"


def test_train_help_explains_the_flags():
    text = " ".join(_help("train.py").split())
    for phrase in ("CLIP model (MODEL.BACKBONE.NAME)",
                   "method (TRAINER.NAME)", "run_record.json", "config overrides as KEY VALUE pairs",
                   "any value >= 0 fixes it, 0 included"):
        assert phrase in text


def test_train_help_lists_every_registered_trainer():
    """--trainer's help is derived from the declarations (torch-free) and names exactly the trainer classes
    that importing ``trainers`` registers, aliases aside."""
    import re

    import trainers  # noqa: F401  (registers the trainers)
    from engine.trainer import TRAINER_REGISTRY

    text = " ".join(_help("train.py").split())
    listed = re.search(r"--trainer TRAINER method \(TRAINER.NAME\): (.*?) --backbone", text).group(1).split(", ")
    ours = [n for n in TRAINER_REGISTRY.registered_names()  # test modules may register toy trainers
            if TRAINER_REGISTRY.get(n).__module__.startswith("trainers.")]
    assert sorted(listed) == sorted(ours)
    assert len(listed) == len(set(listed)) >= 10


def test_sweep_and_collect_help_say_what_they_do():
    sweep = _help("tools/sweep.py")
    example = "python tools/sweep.py --protocol all --methods CoMMA MaPLe --datasets all --seeds 1 2 3 --gpus 0,1\n"
    assert example in sweep
    assert "finished, pending, blocked, differs" in " ".join(sweep.split())
    collect = " ".join(_help("tools/collect_results.py").split())
    assert "rows marked when their runs used random weights or differ in epochs or shots" in collect
