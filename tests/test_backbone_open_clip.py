"""OpenCLIP backbones (``MODEL.BACKBONE.NAME open_clip:<arch>``): encoder equivalence, weights, errors,
and every declared method training one step on a small OpenCLIP architecture."""
import json
import os

import pytest
import torch
import yaml

open_clip = pytest.importorskip("open_clip")

from engine.backbone import PromptedImageEncoder, PromptedTextEncoder, build_random_clip, load_clip  # noqa: E402
from engine.backbone.open_clip_backbone import build_open_clip, open_clip_module  # noqa: E402
from engine.utils.logger import setup_logger  # noqa: E402
from tests.fixtures_backbone import backbone_cfg  # noqa: E402

TINY = "ViT-Tiny-16"
TEXTS = ["a photo of a cat.", "x", "a much longer sentence about a small red bicycle on a sunny day."]
#: a tiny architecture exercising open_clip's variants: CustomTextCLIP layout, layer scale, average
#: pooling with LayerNorm after pooling, a text projection with bias, QuickGELU
VARIANT = {
    "embed_dim": 48, "quick_gelu": True, "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "ls_init_value": 0.5,
                   "pool_type": "avg", "final_ln_after_pool": True},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                 "ls_init_value": 0.5, "proj_bias": True},
}


@pytest.fixture(scope="module")
def variant_arch(tmp_path_factory):
    """Register ``VARIANT`` with open_clip's own config mechanism (``add_model_config``)."""
    path = tmp_path_factory.mktemp("oc_cfg") / "Test-Variant-8.json"
    path.write_text(json.dumps(VARIANT))
    open_clip_module().add_model_config(str(path))
    return "Test-Variant-8"


def _reference(arch, backbone):
    """open_clip's own model (``create_model``, fp32, plain LayerNorm) holding the same weights."""
    ref = open_clip_module().create_model(arch, precision="fp32")
    ref.load_state_dict(backbone.model.state_dict())
    return ref.eval()


@pytest.mark.parametrize("arch", [TINY, f"{TINY}-quickgelu", "variant"])
def test_encoders_without_prompts_equal_open_clip(arch, variant_arch):
    arch = variant_arch if arch == "variant" else arch
    backbone = build_open_clip(arch, seed=3)
    ref = _reference(arch, backbone)
    text_encoder, image_encoder = PromptedTextEncoder(backbone), PromptedImageEncoder(backbone)
    tokens = backbone.tokenize(TEXTS)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours_text = text_encoder(backbone.token_embedding(tokens), tokens)
        ours_image = image_encoder(images)
        for model in (backbone.model, ref):
            torch.testing.assert_close(ours_text, model.encode_text(tokens), rtol=0, atol=1e-5)
            torch.testing.assert_close(ours_image, model.encode_image(images), rtol=0, atol=1e-5)
    assert ours_text.shape == (3, VARIANT["embed_dim"] if arch == variant_arch else 96)
    assert text_encoder.last_shape[1] < 77  # truncated pass, still equal to the 77-position one


def test_tokenizer_activation_and_preprocessing():
    backbone = build_open_clip(TINY)
    assert backbone.activation == "GELU" and build_open_clip(f"{TINY}-quickgelu").activation == "QuickGELU"
    assert torch.equal(backbone.tokenize(TEXTS), open_clip_module().get_tokenizer(TINY)(TEXTS))
    with pytest.raises(ValueError, match="too long for context length 77"):
        backbone.tokenize(["word " * 80])
    assert backbone.preprocess == {"size": 32, "mean": tuple(open_clip.OPENAI_DATASET_MEAN),
                                   "std": tuple(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic"}


def test_low_precision_cast_runs():
    from trainers.base import cast_clip

    backbone = cast_clip(build_open_clip(TINY), torch.bfloat16)
    tokens = backbone.tokenize(TEXTS)
    with torch.no_grad():
        text = PromptedTextEncoder(backbone)(backbone.token_embedding(tokens), tokens)
        image = PromptedImageEncoder(backbone)(torch.rand(2, 3, 32, 32))
    assert text.dtype == image.dtype == torch.bfloat16


# ------------------------------------------------------------------------------ weights and errors
def _cfg(name=f"open_clip:{TINY}", path="", random_init=False, pretrained=True):
    cfg = backbone_cfg(name=name, path=path, random_init=random_init)
    cfg.MODEL.BACKBONE.PRETRAINED = pretrained
    return cfg


def test_random_init_is_seeded_and_logs_architecture(tmp_path, capsys):
    setup_logger(str(tmp_path))
    a, b = load_clip(_cfg(random_init=True)), load_clip(_cfg(random_init=True))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS: CLIP backbone open_clip:ViT-Tiny-16" in out
    assert "OpenCLIP ViT-Tiny-16 (ViT, GELU activation)" in out


@pytest.mark.parametrize("wrap", ["plain", "training_checkpoint", "safetensors"])
def test_checkpoint_file_loads(wrap, tmp_path, capsys):
    source = build_open_clip(TINY, seed=5)
    sd = source.model.state_dict()
    path = tmp_path / "oc.pt"
    if wrap == "plain":
        torch.save(sd, path)
    elif wrap == "training_checkpoint":
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    setup_logger(str(tmp_path))
    loaded = load_clip(_cfg(path=str(path)))
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in sd.items())
    assert "OpenCLIP ViT-Tiny-16 (ViT, GELU activation)" in capsys.readouterr().out


def test_openai_weights_in_the_quickgelu_architecture_equal_openai_clip(tmp_path):
    """OpenAI's CLIP weights in open_clip's -quickgelu architecture: the same features as OpenAI's CLIP."""
    openai = build_random_clip("ViT-Tiny/16", seed=2)
    path = tmp_path / "openai_tiny.pt"
    torch.save(openai.state_dict(), path)
    backbone = load_clip(_cfg(name=f"open_clip:{TINY}-quickgelu", path=str(path)))
    tokens = backbone.tokenize(TEXTS)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(PromptedTextEncoder(backbone)(backbone.token_embedding(tokens), tokens),
                                   openai.encode_text(tokens), rtol=0, atol=1e-5)
        torch.testing.assert_close(PromptedImageEncoder(backbone)(images), openai.encode_image(images),
                                   rtol=0, atol=1e-5)


def test_openclip_checkpoint_with_an_openai_name_is_one_line(tmp_path, variant_arch):
    sd = build_open_clip(TINY).model.state_dict()
    wrapped = tmp_path / "train.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    custom = tmp_path / "custom.pt"
    torch.save(build_open_clip(variant_arch).model.state_dict(), custom)
    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    for path, what in ((wrapped, "'module.'"), (custom, "CustomTextCLIP"), (st, "safetensors")):
        with pytest.raises(ValueError) as err:
            load_clip(_cfg(name="ViT-Tiny/16", path=str(path)))
        msg = str(err.value)
        assert "\n" not in msg and what in msg and "MODEL.BACKBONE.NAME open_clip:" in msg


def test_architecture_mismatch_and_missing_source_are_one_line(tmp_path, variant_arch):
    path = tmp_path / "variant.pt"
    torch.save(build_open_clip(variant_arch).model.state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit open_clip:ViT-Tiny-16.*MODEL.BACKBONE.NAME"):
        load_clip(_cfg(path=str(path)))
    with pytest.raises(ValueError, match="MODEL.BACKBONE.PRETRAINED <tag>.*MODEL.BACKBONE.PATH.*RANDOM_INIT"):
        load_clip(_cfg())
    with pytest.raises(ValueError, match="set only one of"):
        load_clip(_cfg(path=str(path), random_init=True))
    with pytest.raises(ValueError, match="did you mean open_clip:ViT-Tiny-16"):
        load_clip(_cfg(name="open_clip:ViT-Tiny-61", random_init=True))
    with pytest.raises(ValueError, match="timm image tower"):
        load_clip(_cfg(name="open_clip:ViT-B-16-SigLIP", random_init=True, ))
    with pytest.raises(ValueError, match="needs MODEL.BACKBONE.NAME open_clip:"):
        load_clip(_cfg(name="ViT-Tiny/16", random_init=True, pretrained="laion2b_s34b_b88k"))
    with pytest.raises(ValueError, match=r"INPUT.SIZE \(224, 224\) does not match"):
        cfg = _cfg(random_init=True)
        cfg.INPUT.SIZE = (224, 224)
        load_clip(cfg)


def test_pretrained_tag_resolved_through_open_clip(tmp_path, monkeypatch):
    sd = build_open_clip(TINY, seed=7).model.state_dict()
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(sd, path)
    tags = {"fake": {"file": str(path), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
            "quick": {"file": str(path), "quick_gelu": True}}
    oc = open_clip_module()
    monkeypatch.setattr(oc, "get_pretrained_cfg", lambda arch, tag: tags.get(tag, {}) if arch == TINY else {})
    monkeypatch.setattr(oc, "list_pretrained_tags_by_model", lambda arch: sorted(tags))
    loaded = load_clip(_cfg(pretrained="fake"))
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in sd.items())
    assert loaded.preprocess["mean"] == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="not an OpenCLIP pretrained tag of ViT-Tiny-16 .available: fake, quick"):
        load_clip(_cfg(pretrained="nope"))
    with pytest.raises(ValueError, match="set MODEL.BACKBONE.NAME open_clip:ViT-Tiny-16-quickgelu"):
        load_clip(_cfg(pretrained="quick"))

    def offline(cfg, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(oc, "download_pretrained", offline)
    tags["fake"].pop("file")
    with pytest.raises(FileNotFoundError, match="open_clip's download failed .OSError: no network"):
        load_clip(_cfg(pretrained="fake"))


def test_pretrained_tag_via_config_keys():
    """``MODEL.BACKBONE.PRETRAINED`` takes Dassl's bool or a tag string from YAML/opts."""
    from engine.config import get_cfg_default
    from engine.config.setup import merge_from_list

    cfg = get_cfg_default()
    merge_from_list(cfg, ["MODEL.BACKBONE.NAME", "open_clip:ViT-B-16", "MODEL.BACKBONE.PRETRAINED",
                          "laion2b_s34b_b88k"])
    assert cfg.MODEL.BACKBONE.PRETRAINED == "laion2b_s34b_b88k"
    merge_from_list(cfg, ["MODEL.BACKBONE.PRETRAINED", "False"])
    assert cfg.MODEL.BACKBONE.PRETRAINED is False


# ------------------------------------------------------------------------------ every method
def _declarations():
    from trainers.config import method_declarations

    return method_declarations()


@pytest.mark.slow
@pytest.mark.parametrize("decl", _declarations(), ids=lambda d: d["trainer"])
def test_every_method_trains_one_step_on_open_clip(decl, repo_root):
    from engine.api import build_model

    config = os.path.join(repo_root, "configs", "trainers", decl["config_dir"], decl["b2n_cfg"] + ".yaml")
    node = decl["node"]
    opts = {"MODEL.BACKBONE.RANDOM_INIT": True, "SEED": 1, f"TRAINER.{node}.PREC": "fp32", "INPUT.SIZE": (32, 32)}
    with open(config, encoding="utf-8") as f:
        node_yaml = (yaml.safe_load(f) or {}).get("TRAINER", {}).get(node, {})
    for key, value in {**decl["config"], **node_yaml}.items():  # prompt depths that fit the 3 blocks
        if "DEPTH" in key and isinstance(value, int) and value > 3:
            opts[f"TRAINER.{node}.{key}"] = 3
    model = build_model(decl["trainer"], ["circle", "square", "triangle"], backbone=f"open_clip:{TINY}",
                        config=config, device="cpu", **opts)
    assert type(model.network.image_encoder.transformer).__module__.startswith("open_clip")
    trainer = model.trainer
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    probs = model.predict(images)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert model.image_features(images).shape == (2, 96)
    if decl["trainer"] != "CoCoOp":  # CoCoOp's class text features depend on the image
        assert model.text_features().shape == (3, 96)
    learned = [(n, p) for n, p in trainer.trainable_parameters()]
    if decl["zero_shot"] or not learned:
        return
    before = {n: p.detach().clone() for n, p in learned}
    trainer.set_model_mode("train")
    summary = trainer.forward_backward({"img": images, "label": torch.tensor([0, 2])})
    terms = [v for k, v in summary.items() if k == "loss" or k.endswith("_loss")]  # ProGrad: xe_loss, kl_loss
    assert terms and torch.isfinite(torch.tensor(terms)).all(), summary
    assert any(not torch.equal(before[n], p.detach()) for n, p in learned)


def test_train_cli_runs_on_open_clip(tmp_path, repo_root):
    """``train.py`` end to end (train, then evaluate the checkpoint) with an OpenCLIP backbone."""
    import train
    from tests.fixtures_data import make_shapes

    make_shapes(tmp_path / "data", classes=("circle", "square"), counts={"train": 4, "val": 1, "test": 2}, size=32)
    common = ["--root", str(tmp_path / "data"), "--seed", "1", "--trainer", "CoOp",
              "--dataset-config-file", os.path.join(repo_root, "configs/datasets/shapes.yaml"),
              "--config-file", os.path.join(repo_root, "configs/trainers/CoOp/vit_b16_ctxv1.yaml")]
    opts = ["MODEL.BACKBONE.NAME", f"open_clip:{TINY}", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE",
            "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"]
    out = tmp_path / "run"
    assert train.main([*common, "--output-dir", str(out), *opts]) == 0
    log = (out / "log.txt").read_text()
    assert "OpenCLIP ViT-Tiny-16 (ViT, GELU activation)" in log and "=> result" in log
    assert (out / "prompt_learner" / "model.pth.tar-1").is_file()
    assert train.main([*common, "--output-dir", str(tmp_path / "ev"), "--eval-only", "--model-dir", str(out),
                       "--load-epoch", "1", *opts]) == 0
