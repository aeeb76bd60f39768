"""Tiny-CLIP pretraining mechanics: captions from drawn attributes, exact truncated text encoding,
the contrastive loss, a seeded deterministic run, the content-addressed cache and the CLI.

Runs a 2-step recipe on a 40-image pool (seconds); whether pretraining *learns* is not checked here.
"""
import json
import os
import random

import pytest
import torch

from demo.tiny_pretrain import (Recipe, caption, contrastive_loss, encode_text, ensure_pretrained,
                                           position_words, pretrain, size_word, weights_path)

TINY = Recipe(vision_width=64, vision_layers=2, text_layers=2, pool_size=40, steps=2, batch_size=8, warmup_steps=1)


def test_draw_with_attributes_is_draw_shape():
    from demo.shapes_draw import SHAPE_NAMES, draw_shape, draw_shape_with_attributes
    for i, name in enumerate(SHAPE_NAMES):
        img, attrs = draw_shape_with_attributes(name, random.Random(i), 64)
        assert img.tobytes() == draw_shape(name, random.Random(i), 64).tobytes()
        assert attrs.shape == name and 0.16 <= attrs.radius <= 0.36 and 0 < attrs.x < 1 and 0 < attrs.y < 1


def test_caption_words():
    from demo.shapes_draw import ShapeAttributes
    attrs = ShapeAttributes("star", (230, 20, 25), (20, 40, 230), 0.34, 0.2, 0.8)
    assert size_word(0.17) == "small" and size_word(0.25) == "medium" and size_word(0.34) == "large"
    assert position_words(0.2, 0.8) == "bottom left" and position_words(0.5, 0.5) == "center"
    texts = {caption(attrs, random.Random(k), shape_only=0.0) for k in range(200)}
    assert all("star" in t for t in texts) and len(texts) >= 8
    assert any("red" in t for t in texts) and any("blue background" in t for t in texts)
    assert any("bottom left" in t for t in texts) and any("large" in t for t in texts)
    assert {caption(attrs, random.Random(k), shape_only=1.0) for k in range(50)} <= {
        "a photo of a star.", "a star.", "a drawing of a star.", "a picture of a star."}


def test_truncated_text_encoding_equals_clip():
    from demo.tiny_pretrain import build_initial_model
    from engine.backbone.tokenizer import tokenize
    model = build_initial_model(TINY).eval()
    tokens = tokenize(["a photo of a star.", "a small red circle in the top left."])
    with torch.no_grad():
        assert torch.allclose(encode_text(model, tokens), model.encode_text(tokens), atol=1e-5)


def test_contrastive_loss_is_clip_loss_and_merges_duplicates():
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.arange(4)
    clip_loss = (torch.nn.functional.cross_entropy(logits, target)
                 + torch.nn.functional.cross_entropy(logits.t(), target)) / 2
    assert torch.allclose(contrastive_loss(logits, ["a", "b", "c", "d"]), clip_loss)
    soft = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    expected = (-(soft * logits.log_softmax(1)).sum(1).mean() - (soft * logits.t().log_softmax(1)).sum(1).mean()) / 2
    assert torch.allclose(contrastive_loss(logits, ["x", "x", "c", "d"]), expected)


def test_pretrain_is_seeded_and_deterministic():
    state = torch.random.get_rng_state()
    a, ma = pretrain(TINY, log_every=0)
    b, _ = pretrain(TINY, log_every=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # global torch RNG untouched
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert set(ma) == {"loss_first", "loss_last", "zero_shot_heldout", "seconds"}


def test_cache_is_content_addressed_and_loads_through_the_backbone_loader(tmp_path):
    from engine.backbone.loader import load_clip
    from tests.fixtures_backbone import backbone_cfg
    path = ensure_pretrained(TINY, str(tmp_path))
    assert path == weights_path(TINY, str(tmp_path)) and os.path.basename(path).startswith("tiny-clip-shapes-")
    assert weights_path(Recipe(seed=2), "d") != weights_path(Recipe(seed=1), "d")
    mtime = os.stat(path).st_mtime_ns
    assert ensure_pretrained(TINY, str(tmp_path)) == path and os.stat(path).st_mtime_ns == mtime  # reused
    sd = torch.load(path, weights_only=True)
    model = load_clip(backbone_cfg(name="TinyCLIP-Shapes", path=path, random_init=False, size=(32, 32)))
    assert model.visual.input_resolution == 32 and model.transformer.layers == 2
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    meta = json.loads((tmp_path / (os.path.basename(path)[:-3] + ".json")).read_text())
    assert meta["recipe"]["seed"] == 1 and meta["weights"] == os.path.basename(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([os.path.basename(path),
                                                                 meta["weights"][:-3] + ".json"])


def test_cli_print_recipe_and_bad_steps(tmp_path, capsys):
    from tools.pretrain_tiny_clip import main
    assert main(["--cache-dir", str(tmp_path), "--print-recipe"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"] == weights_path(Recipe(), str(tmp_path)) and out["input_size"] == "(32, 32)"
    assert not any(tmp_path.iterdir())  # nothing trained
    assert main(["--steps", "0"]) == 2
    assert "error: --steps must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["vision_layers", "text_layers"])
def test_recipe_architecture_heads_follow_clip(key):
    arch = Recipe().architecture()
    assert arch["transformer_heads"] == arch["transformer_width"] // 64
    assert arch["vision_layers" if key == "vision_layers" else "transformer_layers"] == getattr(Recipe(), key)


def test_recoloured_silhouette_equals_the_drawing_in_those_colours():
    """``render(mask, bg, fg)`` is the drawing resized as the test transform does (up to uint8 rounding
    and bicubic overshoot at edges), so training images follow the Shapes dataset's distribution."""
    from demo.tiny_pretrain import draw_pool, draw_silhouettes, render
    recipe = Recipe(pool_size=20)
    masks, labels, attrs = draw_silhouettes(recipe, 20, stream=3)
    images, labels2, _ = draw_pool(recipe, 20, stream=3)  # same stream: the same drawings
    assert torch.equal(labels, labels2) and masks.shape == (20, 1, 32, 32)
    bg = torch.tensor([a.background for a in attrs], dtype=torch.float32)
    fg = torch.tensor([a.foreground for a in attrs], dtype=torch.float32)
    diff = (render(masks, bg, fg) - images).abs() * 0.27 * 255  # back to 0-255 units
    assert diff.median() < 0.5 and (diff > 40).float().mean() < 0.01


def test_colour_curriculum_goes_from_black_and_white_to_the_dataset_colours():
    import math
    from demo.tiny_pretrain import sample_colours
    bg, fg = sample_colours(random.Random(0), 200, mix=0.0)
    assert set(bg.unique().tolist()) == {0.0, 255.0} and torch.equal(fg, 255 - bg)
    assert (bg[:, 0] == 0).any() and (bg[:, 0] == 255).any()  # both polarities
    bg, fg = sample_colours(random.Random(0), 200, mix=1.0)
    assert all(math.dist(b, f) >= 160 for b, f in zip(bg.tolist(), fg.tolist()))
    assert len({tuple(b) for b in bg.tolist()}) == 200


def test_pca_patch_init_whitens_the_patch_embedding():
    from demo.tiny_pretrain import build_initial_model, pca_patch_init
    model = build_initial_model(TINY)
    images = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    pca_patch_init(model, images)
    with torch.no_grad():
        tokens = model.visual.conv1(images).flatten(2).transpose(1, 2).reshape(-1, 64)
    cov = torch.cov(tokens.t())
    assert torch.allclose(cov, torch.eye(64), atol=0.05)
