"""Safe loading of official (Dassl-pickled) checkpoints and ``tools/convert_checkpoint.py``.

Synthetic official files are written here exactly as Dassl does (whole-model state dict for
MaPLe/COMMA, prompt-learner keys for CoOp, a pickled ``CosineAnnealingLR``+``SGD`` inside the
scheduler entry), so these tests never need ``../shared``. Proves: plain ``weights_only`` refuses
them, our loader reads them without running their classes, the tensors round-trip, unknown classes
stop with a one-line error naming the class and the converter, ``--trust`` conversion gives a plain
file, and the CoMMA/MaPLe models accept the official keys.
"""
import fractions
import os
import pickle
import subprocess
import sys

import pytest
import torch

from engine.legacy_checkpoint import LegacyObject, load_official_or_native, safe_load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dassl_scheduler():
    optim = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.0035, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=5)
    return optim, {"successor": sched, "warmup_epoch": 1, "cons_lr": 1e-5, "last_epoch": 1}


def write_official(path, state_dict, epoch=5, extra=None):
    optim, sched = dassl_scheduler()
    ckpt = {"state_dict": state_dict, "epoch": epoch, "optimizer": optim.state_dict(),
            "scheduler": sched, "val_result": None}
    ckpt.update(extra or {})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(ckpt, path)
    return path


def official_multimodal_state(depth=2, comma=False):
    g = torch.Generator().manual_seed(0)
    sd = {"logit_scale": torch.tensor(4.6), "image_encoder.conv1.weight": torch.randn(8, 3, 2, 2, generator=g),
          "text_encoder.positional_embedding": torch.randn(77, 64, generator=g),
          "prompt_learner.ctx": torch.randn(2, 64, generator=g),
          "prompt_learner.proj.weight": torch.randn(128, 64, generator=g),
          "prompt_learner.proj.bias": torch.randn(128, generator=g),
          "prompt_learner.token_prefix": torch.randn(10, 1, 64, generator=g),
          "prompt_learner.token_suffix": torch.randn(10, 74, 64, generator=g)}
    if comma:
        sd["prompt_learner.compound_prompts_text"] = torch.randn(depth - 1, 2, 64, generator=g)
        sd["prompt_learner.compound_prompts_image"] = torch.randn(depth - 1, 2, 128, generator=g)
        for name, shape in (("fc.weight", (128, 64)), ("fc.bias", (128,)), ("ln.weight", (128,)), ("ln.bias", (128,)),
                            ("mlp.0.weight", (32, 128)), ("mlp.0.bias", (32,)), ("mlp.2.weight", (128, 32)),
                            ("mlp.2.bias", (128,))):
            sd[f"prompt_learner.compound_prompt_projections_image_base.{name}"] = torch.randn(shape, generator=g)
    else:
        for i in range(depth - 1):
            sd[f"prompt_learner.compound_prompts_text.{i}"] = torch.randn(2, 64, generator=g)
            sd[f"prompt_learner.compound_prompt_projections.{i}.weight"] = torch.randn(128, 64, generator=g)
            sd[f"prompt_learner.compound_prompt_projections.{i}.bias"] = torch.randn(128, generator=g)
    return sd


def test_plain_weights_only_refuses_official_files(tmp_path):
    path = write_official(str(tmp_path / "MultiModalPromptLearner" / "model.pth.tar-5"), official_multimodal_state())
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


@pytest.mark.parametrize("comma", [False, True])
def test_official_multimodal_checkpoint_loads_safely(tmp_path, comma):
    state = official_multimodal_state(comma=comma)
    path = write_official(str(tmp_path / "MultiModalPromptLearner" / "model.pth.tar-5"), state)
    ckpt = load_official_or_native(path)
    assert ckpt["epoch"] == 5 and ckpt["format"] == "official"
    assert ckpt["scheduler"] is None  # pickled objects are not handed on
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 0.0035
    assert set(ckpt["state_dict"]) == set(state)
    for key, value in state.items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    # the pickled scheduler became an inert stand-in: none of torch's scheduler code ran
    raw = safe_load(path)
    successor = raw["scheduler"]["successor"]
    assert isinstance(successor, LegacyObject) and successor.qualified_name.endswith("CosineAnnealingLR")
    assert not isinstance(successor, torch.optim.lr_scheduler.LRScheduler)


def test_official_coop_checkpoint_and_native_checkpoint(tmp_path):
    coop = {"ctx": torch.randn(16, 64), "token_prefix": torch.randn(5, 1, 64), "token_suffix": torch.randn(5, 60, 64),
            "meta_net.linear1.weight": torch.randn(4, 96)}
    path = write_official(str(tmp_path / "prompt_learner" / "model.pth.tar-50"), coop, epoch=50)
    ckpt = load_official_or_native(path)
    assert ckpt["epoch"] == 50
    assert torch.equal(ckpt["state_dict"]["meta_net.linear1.weight"], coop["meta_net.linear1.weight"])
    native = str(tmp_path / "native.pth.tar")
    torch.save({"state_dict": {"prompt_learner.ctx": torch.ones(2, 3)}, "epoch": 2, "optimizer": None,
                "scheduler": {"last_epoch": 2}, "val_result": 0.5}, native)
    ckpt = load_official_or_native(native)
    assert ckpt["format"] == "native" and ckpt["scheduler"] == {"last_epoch": 2} and ckpt["val_result"] == 0.5


def test_unknown_class_is_a_one_line_error_pointing_to_the_converter(tmp_path):
    path = write_official(str(tmp_path / "x" / "model.pth.tar-1"), {"ctx": torch.ones(2)},
                          extra={"val_result": fractions.Fraction(1, 3)})
    with pytest.raises(ValueError) as err:
        load_official_or_native(path)
    message = str(err.value)
    assert "\n" not in message
    assert "fractions.Fraction" in message and "tools/convert_checkpoint.py" in message and "--trust" in message


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_official_or_native(str(tmp_path / "missing.pth.tar"))
    path = str(tmp_path / "list.pth")
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="expected a checkpoint dict with a 'state_dict' entry"):
        load_official_or_native(path)


def test_convert_checkpoint_cli_trust(tmp_path):
    state = official_multimodal_state(comma=True)
    src = write_official(str(tmp_path / "official" / "model.pth.tar-5"), state,
                         extra={"val_result": fractions.Fraction(1, 3)})
    dst = str(tmp_path / "ours" / "MultiModalPromptLearner" / "model.pth.tar-5")
    tool = os.path.join(REPO, "tools", "convert_checkpoint.py")
    refused = subprocess.run([sys.executable, tool, src, dst], capture_output=True, text=True)
    assert refused.returncode == 2 and "fractions.Fraction" in refused.stderr and not os.path.exists(dst)
    done = subprocess.run([sys.executable, tool, src, dst, "--trust"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = torch.load(dst, weights_only=True)  # plain file now
    assert out["epoch"] == 5 and out["scheduler"] is None and out["optimizer"] is None
    assert set(out["state_dict"]) == {k for k in state if k.startswith("prompt_learner.")}
    assert torch.equal(out["state_dict"]["prompt_learner.ctx"], state["prompt_learner.ctx"])
    assert os.listdir(os.path.dirname(dst)) == ["model.pth.tar-5"]  # atomic write, no temp left over


def test_official_keys_fit_our_models(tmp_path):
    """Official MaPLe/COMMA prompt-learner keys load into our models (tiny backbone, depth 2)."""
    from engine.backbone import build_random_clip
    from engine.config import get_cfg_default
    from trainers.comma import CoMMACLIP
    from trainers.config import extend_cfg
    from trainers.maple import MultiModalCLIP, MultiModalPromptLearner

    clip_model = build_random_clip("ViT-Tiny/16", seed=0)
    cfg = extend_cfg(get_cfg_default())
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = cfg.TRAINER.COMMA.PROMPT_DEPTH = 2
    names = ["a", "b"]
    models = {False: MultiModalCLIP(clip_model, names, MultiModalPromptLearner(cfg, clip_model, names)),
              True: CoMMACLIP(cfg, clip_model, names)}
    for comma, model in models.items():
        path = write_official(str(tmp_path / str(comma) / "model.pth.tar-5"), official_multimodal_state(comma=comma))
        state = model.load_legacy_state_dict(load_official_or_native(path)["state_dict"])
        learned = {k[len("prompt_learner."):]: v for k, v in state.items()
                   if k.startswith("prompt_learner.") and not k.endswith(("token_prefix", "token_suffix"))}
        result = model.prompt_learner.load_state_dict(learned, strict=False)
        assert result.unexpected_keys == []
        assert sorted(result.missing_keys) == ["token_prefix", "token_suffix"]
        assert torch.equal(model.prompt_learner.ctx, learned["ctx"])
