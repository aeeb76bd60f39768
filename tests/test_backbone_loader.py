"""CLIP loading (issue 2 item 7): architecture table, random init, weight files, cache, errors."""
import hashlib
import random
import urllib.error

import numpy as np
import pytest
import torch

from engine.backbone import (ARCHITECTURES, TINY_NAME, BackboneWeightsNotFound, available_backbones,
                             build_random_clip, expected_weights_file, load_clip, load_clip_from_state_dict,
                             tokenize)
from engine.backbone._clip import CLIP, clip, clip_api
from engine.backbone.architectures import architecture_from_state_dict
from engine.utils.logger import setup_logger
from tests.fixtures_backbone import backbone_cfg, det_clip_file  # noqa: F401  (fixture)


def _param_count(model):
    return sum(p.numel() for p in model.parameters())


def _rng_states():
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def _assert_rng_unchanged(before):
    after = _rng_states()
    assert torch.equal(before[0], after[0])
    assert before[1] == after[1]
    assert np.array_equal(before[2], after[2])


def _assert_same_weights(model, sd):
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert got[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(got[k], v.to(got[k].dtype)), k


@pytest.fixture(scope="module")
def tiny_sd():
    return build_random_clip(TINY_NAME, seed=3).state_dict()


def test_names_cover_clip_models_plus_tiny():
    assert set(ARCHITECTURES) == set(clip.available_models()) | {TINY_NAME}
    assert available_backbones() == clip.available_models() + [TINY_NAME]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_table_equals_what_build_model_infers(name):
    """Our table, our inference and clip.model.build_model agree on every parameter (meta device)."""
    with torch.device("meta"):
        ours = CLIP(**ARCHITECTURES[name])
        sd = ours.state_dict()
        theirs = clip.model.build_model(dict(sd))
    assert architecture_from_state_dict(sd) == ARCHITECTURES[name]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_published_parameter_counts():
    """Counts printed by OpenAI's CLIP notebook / model card for the released checkpoints."""
    with torch.device("meta"):
        assert _param_count(CLIP(**ARCHITECTURES["ViT-B/32"])) == 151_277_313
        assert _param_count(CLIP(**ARCHITECTURES["ViT-B/16"])) == 149_620_737


@pytest.mark.parametrize("name,patch,tokens", [("ViT-B/16", 16, 197), ("ViT-B/32", 32, 50)])
def test_random_init_vit_b(name, patch, tokens):
    before = _rng_states()
    model = load_clip(backbone_cfg(name, random_init=True, size=(224, 224), seed=0))
    _assert_rng_unchanged(before)
    with torch.device("meta"):
        reference = clip.model.build_model({k: v.to("meta") for k, v in model.state_dict().items()})
    assert _param_count(model) == _param_count(reference)
    assert isinstance(model, CLIP) and not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert model.visual.conv1.weight.shape == (768, 3, patch, patch)
    assert model.visual.positional_embedding.shape == (tokens, 768)
    assert model.positional_embedding.shape == (77, 512)
    assert model.token_embedding.weight.shape == (49408, 512)
    assert model.text_projection.shape == (512, 512) and model.visual.proj.shape == (768, 512)
    assert len(model.visual.transformer.resblocks) == 12 and len(model.transformer.resblocks) == 12
    assert model.visual.input_resolution == 224


def test_random_init_is_seeded_and_keeps_global_rng(tmp_path):
    setup_logger(str(tmp_path))
    try:
        before = _rng_states()
        a = load_clip(backbone_cfg(seed=1))
        b = load_clip(backbone_cfg(seed=1))
        c = load_clip(backbone_cfg(seed=2))
        d = load_clip(backbone_cfg(seed=-1))
        _assert_rng_unchanged(before)
    finally:
        setup_logger(None)
    sa, sb, sc, sd = (m.state_dict() for m in (a, b, c, d))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["visual.conv1.weight"], sc["visual.conv1.weight"])
    e = build_random_clip(TINY_NAME, seed=0).state_dict()
    assert all(torch.equal(sd[k], e[k]) for k in sd)  # SEED < 0 -> seed 0
    log = (tmp_path / "log.txt").read_text()
    assert log.count("WARNING: RANDOM WEIGHTS: CLIP backbone ViT-Tiny/16") == 4
    assert "meaningless" in log


def test_state_dict_file_through_path(tmp_path, tiny_sd):
    plain = tmp_path / "plain.pt"
    torch.save(tiny_sd, plain)
    _assert_same_weights(load_clip(backbone_cfg(path=str(plain), random_init=False)), tiny_sd)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": tiny_sd, "epoch": 3}, wrapped)
    _assert_same_weights(load_clip(backbone_cfg(path=str(wrapped), random_init=False)), tiny_sd)
    half = tmp_path / "half.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in tiny_sd.items()}, half)
    model = load_clip(backbone_cfg(path=str(half), random_init=False))
    _assert_same_weights(model, {k: v.half().float() for k, v in tiny_sd.items()})


def test_loaded_model_does_not_alias_the_state_dict(tiny_sd):
    sd = {k: v.clone() for k, v in tiny_sd.items()}
    model = load_clip_from_state_dict(sd)
    with torch.no_grad():
        model.visual.proj.add_(1.0)
    assert torch.equal(sd["visual.proj"], tiny_sd["visual.proj"])
    assert model.transformer.resblocks[0].attn_mask.device.type == "cpu"
    assert torch.equal(model.transformer.resblocks[0].attn_mask, model.build_attention_mask())


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning")
def test_torchscript_archive_through_path(tmp_path, tiny_sd):
    """An OpenAI-style TorchScript archive (traced CLIP with the archive's extra scalar entries)."""
    model = load_clip_from_state_dict(tiny_sd)
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(key, None)  # CLIP keeps two of them as plain ints; the archives hold tensors
        model.register_buffer(key, torch.tensor(value))
    traced = torch.jit.trace(model, (torch.zeros(1, 3, 32, 32), tokenize(["a photo"])), check_trace=False)
    archive = tmp_path / "ViT-Tiny-16.pt"
    torch.jit.save(traced, str(archive))
    assert "input_resolution" in torch.jit.load(str(archive)).state_dict()
    _assert_same_weights(load_clip(backbone_cfg(path=str(archive), random_init=False)), tiny_sd)


def test_resnet_state_dict_round_trip():
    """The ResNet branch of the architecture inference (tiny RN built directly with clip's CLIP)."""
    rn = CLIP(64, 64, (1, 1, 1, 1), 16, None, 77, 49408, 64, 1, 1).eval()
    sd = rn.state_dict()
    _assert_same_weights(load_clip_from_state_dict(sd), sd)


def test_missing_weights_names_file_url_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path / "cache"))

    def offline(url, root):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(clip_api, "_download", offline)
    expected = str(tmp_path / "cache" / "ViT-B-16.pt")
    assert expected_weights_file("ViT-B/16") == expected
    with pytest.raises(BackboneWeightsNotFound) as info:
        load_clip(backbone_cfg("ViT-B/16", random_init=False, size=(224, 224)))
    msg = str(info.value)
    assert expected in msg and clip_api._MODELS["ViT-B/16"] in msg
    assert "MODEL.BACKBONE.RANDOM_INIT True" in msg and "MODEL.BACKBONE.PATH" in msg
    assert "no network" in msg and "\n" not in msg


@pytest.mark.filterwarnings("ignore:.*SHA256 checksum does not match:UserWarning")
def test_cache_hit_is_verified_and_used_offline(tmp_path, monkeypatch, tiny_sd):
    """A file in $CLIP_CACHE_DIR with the URL's SHA256 is used without network; a corrupt one is reported."""
    cache = tmp_path / "cache"
    cache.mkdir()
    weights = cache / "ViT-B-32.pt"
    torch.save(tiny_sd, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setitem(clip_api._MODELS, "ViT-B/32", f"https://example.invalid/clip/{sha}/ViT-B-32.pt")
    monkeypatch.setenv("CLIP_CACHE_DIR", str(cache))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline test")

    monkeypatch.setattr(clip_api.urllib.request, "urlopen", no_network)
    _assert_same_weights(load_clip(backbone_cfg("ViT-B/32", random_init=False)), tiny_sd)
    weights.write_bytes(b"corrupt")
    with pytest.raises(BackboneWeightsNotFound, match="exists but its SHA256 does not match"):
        load_clip(backbone_cfg("ViT-B/32", random_init=False))


def test_input_size_mismatch(tmp_path, tiny_sd):
    with pytest.raises(ValueError, match=r"INPUT.SIZE \(224, 224\) does not match the image size 32x32"):
        load_clip(backbone_cfg(size=(224, 224)))
    path = tmp_path / "tiny.pt"
    torch.save(tiny_sd, path)
    with pytest.raises(ValueError, match=r"INPUT.SIZE \(224, 224\).*32x32.*set INPUT.SIZE \(32, 32\)"):
        load_clip(backbone_cfg(path=str(path), random_init=False, size=(224, 224)))


def test_bad_configs_and_files(tmp_path):
    with pytest.raises(ValueError, match="conflicts with MODEL.BACKBONE.PATH"):
        load_clip(backbone_cfg(path="x.pt", random_init=True))
    with pytest.raises(ValueError, match="without released weights"):
        load_clip(backbone_cfg(random_init=False))
    with pytest.raises(ValueError, match="did you mean 'ViT-B/16'"):
        load_clip(backbone_cfg("ViT-B16", random_init=True))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip(backbone_cfg(path=str(tmp_path / "missing.pt"), random_init=False))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read CLIP weights from .*garbage.pt"):
        load_clip(backbone_cfg(path=str(garbage), random_init=False))
    other = tmp_path / "other.pt"
    torch.save({"ctx": torch.zeros(2, 4)}, other)
    with pytest.raises(ValueError, match="other.pt: not an OpenAI CLIP state dict: missing key"):
        load_clip(backbone_cfg(path=str(other), random_init=False))


def test_det_clip_loads_through_path(det_clip_file):  # noqa: F811
    path, sd = det_clip_file
    model = load_clip(backbone_cfg("ViT-B/16", path=path, random_init=False, size=(32, 32)))
    _assert_same_weights(model, sd)
    assert model.visual.transformer.width == 768 and model.transformer.width == 512
    assert len(model.visual.transformer.resblocks) == 3 and model.visual.input_resolution == 32


def test_tokenize():
    tokens = tokenize(["a photo of a dog.", "circle"])
    assert tokens.dtype == torch.long and tokens.shape == (2, 77)
    assert torch.equal(tokens, clip.tokenize(["a photo of a dog.", "circle"]).long())
    assert torch.equal(tokenize("circle"), tokens[1:])
    with pytest.raises(ValueError, match="too long"):
        tokenize("word " * 100)
    assert tokenize("word " * 100, truncate=True).shape == (1, 77)


def test_project_default_config_builds_the_tiny_backbone():
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = TINY_NAME
    cfg.MODEL.BACKBONE.RANDOM_INIT = True
    cfg.INPUT.SIZE = (32, 32)
    model = load_clip(cfg)
    assert model.visual.input_resolution == 32 and model.transformer.width == 64
    cfg.MODEL.BACKBONE.NAME = ""  # Dassl's default name
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME '' is not a known CLIP architecture"):
        load_clip(cfg)
