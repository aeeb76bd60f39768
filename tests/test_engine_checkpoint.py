"""Checkpoints (Dassl layout, weights_only round trip) and atomic writes."""
import json
import os
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from engine import checkpoint as ckpt_mod
from engine.checkpoint import latest_checkpoint_path, load_checkpoint, resume_from_dir, save_checkpoint
from engine.config import get_cfg_default
from engine.optim import build_lr_scheduler, build_optimizer
from engine.utils import io as io_mod
from engine.utils.io import atomic_torch_save, atomic_write_json, atomic_write_text, read_json, write_json


def model_optim_sched():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    cfg = get_cfg_default().OPTIM
    cfg.NAME, cfg.LR, cfg.LR_SCHEDULER, cfg.MAX_EPOCH, cfg.WARMUP_EPOCH = "sgd", 0.1, "cosine", 5, 1
    optim = build_optimizer(model, cfg)
    sched = build_lr_scheduler(optim, cfg)
    return model, optim, sched


def train_one_step(model, optim, sched):
    loss = model(torch.ones(4, 3)).pow(2).sum()
    optim.zero_grad()
    loss.backward()
    optim.step()
    sched.step()


def test_round_trip_weights_only_and_layout(tmp_path):
    model, optim, sched = model_optim_sched()
    train_one_step(model, optim, sched)
    state = {"state_dict": OrderedDict(("module." + k, v) for k, v in model.state_dict().items()), "epoch": 2,
             "optimizer": optim.state_dict(), "scheduler": sched.state_dict(), "val_result": None}
    path = save_checkpoint(state, str(tmp_path / "MultiModalPromptLearner"))
    assert path == str(tmp_path / "MultiModalPromptLearner" / "model.pth.tar-2")
    assert (tmp_path / "MultiModalPromptLearner" / "checkpoint").read_text() == "model.pth.tar-2\n"
    assert latest_checkpoint_path(str(tmp_path / "MultiModalPromptLearner")) == path
    loaded = torch.load(path, weights_only=True)
    assert list(loaded) == ["state_dict", "epoch", "optimizer", "scheduler", "val_result", "checksum_sha256"]
    assert list(loaded["state_dict"]) == ["weight", "bias"]  # "module." stripped
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][k], v)
    assert loaded["epoch"] == 2 and loaded["val_result"] is None
    assert loaded["scheduler"] == {"last_epoch": 1, "base_lrs": [0.1]}
    assert load_checkpoint(path)["optimizer"]["param_groups"][0]["lr"] == optim.param_groups[0]["lr"]


def test_resume_from_dir_restores_model_optimizer_scheduler(tmp_path):
    model, optim, sched = model_optim_sched()
    train_one_step(model, optim, sched)
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 1, "optimizer": optim.state_dict(),
                     "scheduler": sched.state_dict(), "val_result": None}, str(tmp_path))
    model2, optim2, sched2 = model_optim_sched()
    assert resume_from_dir(str(tmp_path), model2, optim2, sched2) == 1
    assert torch.equal(model2.weight, model.weight)
    assert optim2.param_groups[0]["lr"] == optim.param_groups[0]["lr"] == pytest.approx(0.1)
    assert sched2.last_epoch == 1
    train_one_step(model, optim, sched)
    train_one_step(model2, optim2, sched2)  # momentum buffers restored too -> identical next step
    assert torch.equal(model2.weight, model.weight)


def test_best_flag_and_unsafe_content(tmp_path):
    model, _, _ = model_optim_sched()
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 3, "val_result": 81.5}, str(tmp_path), is_best=True)
    best = torch.load(tmp_path / "model-best.pth.tar", weights_only=True)
    assert best["val_result"] == 81.5
    with pytest.raises(TypeError, match=r"checkpoint\['scheduler'\]\['successor'\].*Linear"):
        save_checkpoint({"state_dict": {}, "epoch": 4, "scheduler": {"successor": nn.Linear(1, 1)}}, str(tmp_path))
    assert not (tmp_path / "model.pth.tar-4").exists()


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(str(tmp_path / "nope.pth"))

    legacy = tmp_path / "legacy.pth.tar"
    torch.save({"scheduler": {"successor": nn.Linear(1, 1)}}, legacy)  # pickles a module, like Dassl did
    with pytest.raises(RuntimeError) as exc:
        load_checkpoint(str(legacy))
    assert "weights-only" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(FileNotFoundError, match="pointer"):
        resume_from_dir(str(tmp_path), nn.Linear(1, 1))


class Boom(RuntimeError):
    pass


def test_atomic_torch_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "model.pth.tar-1"
    atomic_torch_save({"x": torch.ones(2)}, str(target))
    before = target.read_bytes()

    def failing_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise Boom("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(Boom):
        atomic_torch_save({"x": torch.zeros(2)}, str(target))
    assert target.read_bytes() == before  # the old file is untouched
    new = tmp_path / "model.pth.tar-2"
    with pytest.raises(Boom):
        save_checkpoint({"state_dict": {}, "epoch": 2}, str(tmp_path))
    assert not new.exists()
    assert sorted(os.listdir(tmp_path)) == ["model.pth.tar-1"]  # no temp file, no pointer update


def test_atomic_text_json_helpers(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "a.json"
    write_json({"b": [1, 2]}, str(path))
    assert read_json(str(path)) == {"b": [1, 2]}
    assert path.read_text() == json.dumps({"b": [1, 2]}, indent=4, separators=(",", ": "))
    atomic_write_text(str(tmp_path / "t.txt"), "hello")
    assert (tmp_path / "t.txt").read_text() == "hello"

    def failing_dumps(*a, **k):
        raise Boom("no")

    monkeypatch.setattr(io_mod.json, "dumps", failing_dumps)
    with pytest.raises(Boom):
        atomic_write_json(str(path), {"c": 1})
    monkeypatch.undo()
    assert read_json(str(path)) == {"b": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(str(tmp_path / "bad.json"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(str(tmp_path / "missing.json"))
    assert io_mod.listdir_nohidden(str(tmp_path), sort=True) == ["bad.json", "sub", "t.txt"]


def test_check_weights_only_safe_accepts_plain_content():
    ckpt_mod.check_weights_only_safe({"a": [1, 2.0, "s", None, True, (torch.ones(1),)], "b": {"c": torch.zeros(2)}})
