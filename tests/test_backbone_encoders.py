"""Prompted encoders (issue 4 item 1): equal vanilla CLIP without prompts, prompt placement per
block, real last-K hidden states, per-class prompts, ResNet fallback, bf16 on CPU."""
import copy

import pytest
import torch

from engine.backbone import PromptedImageEncoder, PromptedTextEncoder, build_random_clip, load_clip, tokenize
from engine.backbone._clip import CLIP, clip
from engine.backbone.text_plan import TextPlan
from tests.fixtures_backbone import backbone_cfg, det_clip_file  # noqa: F401  (fixture)

CLASSNAMES = ["circle", "red square", "a very long name of a triangle", "star"]


@pytest.fixture(scope="module")
def tiny():
    return build_random_clip("ViT-Tiny/16", seed=0)


@pytest.fixture(scope="module")
def det(det_clip_file):  # noqa: F811
    return load_clip(backbone_cfg("ViT-B/16", path=det_clip_file[0], random_init=False, size=(32, 32)))


@pytest.fixture(params=["tiny", "det"])
def model(request):
    return request.getfixturevalue(request.param)


def _text_inputs(model):
    tok = tokenize([f"a photo of a {c}." for c in CLASSNAMES])
    return model.token_embedding(tok).detach(), tok


def _images(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    res = model.visual.input_resolution
    return torch.randn(n, 3, res, res, generator=g)


def _prompts(n_prompts, n_tok, width, seed, lead=()):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*lead, n_tok, width, generator=g) for _ in range(n_prompts)]


def _reference_text(model, emb, tok, deep=()):
    """Independent reference: CLIP's blocks one by one, in-place writes of positions 1..n."""
    x = (emb + model.positional_embedding).permute(1, 0, 2)
    outs = []
    for i, blk in enumerate(model.transformer.resblocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1]
            x = x.clone()
            x[1:1 + p.shape[-2]] = p.unsqueeze(1) if p.dim() == 2 else p.transpose(0, 1)
        x = blk(x)
        outs.append(x.permute(1, 0, 2))
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tok.argmax(-1)] @ model.text_projection, outs


def _reference_image(model, images, shallow, deep=()):
    """Independent reference: ``visual`` pieces by hand, prompt tokens written in place."""
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    cls = v.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    n = shallow.shape[-2]
    x = torch.cat([x, shallow.expand(x.shape[0], -1, -1)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)
    for i, blk in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = x.clone()
            x[-n:] = deep[i - 1].unsqueeze(1)
        x = blk(x)
    return v.ln_post(x[0]) @ v.proj


@torch.no_grad()
def test_no_prompts_equal_clip(model):
    emb, tok = _text_inputs(model)
    text = PromptedTextEncoder(model)
    assert (text(emb, tok) - model.encode_text(tok)).abs().max() <= 1e-5
    images = _images(model)
    assert (PromptedImageEncoder(model)(images) - model.encode_image(images)).abs().max() <= 1e-5


def test_encoders_share_clip_parameters_and_widths(tiny, det):
    for m, (dt, dv, layers) in ((tiny, (64, 128, 3)), (det, (512, 768, 3))):
        text, image = PromptedTextEncoder(m), PromptedImageEncoder(m)
        assert (text.width, text.layers, text.context_length, text.dtype) == (dt, layers, 77, torch.float32)
        assert (image.width, image.layers, image.input_resolution, image.dtype) == (dv, layers, 32, torch.float32)
        assert text.embed_dim == image.embed_dim == m.text_projection.shape[1]
        assert text.text_projection is m.text_projection and image.proj is m.visual.proj
        assert set(image.state_dict()) == set(m.visual.state_dict())
        assert set(text.state_dict()) == {k for k in m.state_dict() if k.startswith(
            ("transformer.", "positional_embedding", "ln_final.", "text_projection"))}


@torch.no_grad()
def test_text_deep_prompts_inserted_before_blocks_2_to_J(model):
    emb, tok = _text_inputs(model)
    text = PromptedTextEncoder(model)
    layers = text.layers
    deep = _prompts(layers, 2, text.width, seed=1)  # the last one would precede a block that does not exist
    out = text(emb, tok, deep)
    assert (out - _reference_text(model, emb, tok, deep)[0]).abs().max() <= 1e-5
    for j in range(layers):
        changed = list(deep)
        changed[j] = torch.randn_like(deep[j])  # (a constant shift would be cancelled by ln_1)
        diff = (text(emb, tok, changed) - out).abs().max()
        if j < layers - 1:
            assert diff > 1e-4, f"deep_prompts[{j}] (before block {j + 1}) had no effect"
        else:
            assert diff == 0, "a prompt beyond the last block must not be inserted"
    assert (text(emb, tok, deep[:1]) - out).abs().max() > 1e-4  # fewer prompts: later blocks untouched


@torch.no_grad()
def test_text_per_class_prompts_equal_one_class_at_a_time(tiny):
    emb, tok = _text_inputs(tiny)
    text = PromptedTextEncoder(tiny)
    deep = _prompts(2, 3, text.width, seed=2, lead=(len(CLASSNAMES),))
    batched = text(emb, tok, deep)
    for c in range(len(CLASSNAMES)):
        single = text(emb[c:c + 1], tok[c:c + 1], [p[c] for p in deep])
        assert (batched[c] - single[0]).abs().max() <= 1e-5
    assert (batched - _reference_text(tiny, emb, tok, deep)[0]).abs().max() <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("k", [1, 2, 3])
def test_return_hidden_is_the_real_last_k_blocks(model, k):
    emb, tok = _text_inputs(model)
    text = PromptedTextEncoder(model)
    deep = _prompts(2, 2, text.width, seed=3)
    feats, hidden = text(emb, tok, deep, return_hidden=k, length=77)
    ref_feats, ref_outs = _reference_text(model, emb, tok, deep)
    assert (feats - ref_feats).abs().max() <= 1e-5
    assert len(hidden) == k
    for got, want in zip(hidden, ref_outs[-k:]):
        assert got.shape == (len(CLASSNAMES), 77, text.width)
        assert (got - want).abs().max() <= 1e-5
    if k > 1:  # distinct blocks, not one block repeated
        assert (hidden[-1] - hidden[-2]).abs().max() > 1e-3


def test_text_argument_errors(tiny):
    emb, tok = _text_inputs(tiny)
    text = PromptedTextEncoder(tiny)
    assert isinstance(text(emb, tok, return_hidden=0), torch.Tensor)
    with pytest.raises(ValueError, match="return_hidden=4"):
        text(emb, tok, return_hidden=4)
    with pytest.raises(ValueError, match=r"deep_prompts\[0\]: expected shape \[n, 64\]"):
        text(emb, tok, [torch.zeros(2, 32)])
    with pytest.raises(ValueError, match=r"embeddings: expected shape \[C, 77, 64\]"):
        text(emb[:, :10], tok[:, :10])


def test_gradients_reach_exactly_the_inserted_prompts(tiny):
    emb, tok = _text_inputs(tiny)
    text, image = PromptedTextEncoder(tiny), PromptedImageEncoder(tiny)
    deep_t = [p.requires_grad_() for p in _prompts(3, 2, 64, seed=4)]
    text(emb, tok, deep_t).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in deep_t[:2]) and deep_t[2].grad is None
    shallow = torch.randn(2, 128).requires_grad_()
    deep_v = [p.requires_grad_() for p in _prompts(3, 2, 128, seed=5)]
    image(_images(tiny), shallow, deep_v).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [shallow, *deep_v[:2]])
    assert deep_v[2].grad is None


@torch.no_grad()
def test_image_prompts_placement(model):
    image = PromptedImageEncoder(model)
    images = _images(model)
    shallow = torch.randn(2, image.width, generator=torch.Generator().manual_seed(6))
    deep = _prompts(image.layers, 2, image.width, seed=7)
    out = image(images, shallow, deep)
    assert (out - _reference_image(model, images, shallow, deep)).abs().max() <= 1e-5
    assert (image(images, shallow) - image(images)).abs().max() > 1e-4
    for j in range(image.layers):
        changed = list(deep)
        changed[j] = torch.randn_like(deep[j])  # (a constant shift would be cancelled by ln_1)
        diff = (image(images, shallow, changed) - out).abs().max()
        assert diff > 1e-4 if j < image.layers - 1 else diff == 0


@torch.no_grad()
def test_image_per_sample_prompts_and_errors(tiny):
    image = PromptedImageEncoder(tiny)
    images = _images(tiny, n=2)
    shallow = torch.randn(2, 2, 128)  # one prompt per image
    deep = _prompts(2, 2, 128, seed=8, lead=(2,))
    batched = image(images, shallow, deep)
    for b in range(2):
        single = image(images[b:b + 1], shallow[b], [p[b] for p in deep])
        assert (batched[b] - single[0]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="pass a shallow_prompt"):
        image(images, None, [torch.zeros(2, 128)])
    with pytest.raises(ValueError, match="3 tokens, expected 2"):
        image(images, torch.zeros(2, 128), [torch.zeros(3, 128)])
    with pytest.raises(ValueError, match=r"shallow_prompt: expected shape \[n, 128\]"):
        image(images, torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"images: expected shape \[B, 3, 32, 32\]"):
        image(torch.zeros(1, 3, 64, 64))


@torch.no_grad()
def test_resnet_image_encoder_has_no_prompts():
    rn = CLIP(64, 64, (1, 1, 1, 1), 16, None, 77, 49408, 64, 1, 1).eval()
    image = PromptedImageEncoder(rn)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(image(x), rn.encode_image(x))
    assert (image.is_vit, image.width, image.layers, image.embed_dim) == (False, None, 0, 64)
    assert set(image.state_dict()) == set(rn.visual.state_dict())
    with pytest.raises(ValueError, match="visual prompts need a ViT image encoder"):
        image(x, torch.zeros(2, 16))


def _to_bf16(model):
    """CLIP's own low-precision layout (``convert_weights``: LayerNorms/embeddings stay fp32), in bf16."""
    model = copy.deepcopy(model)
    clip.model.convert_weights(model)
    for p in model.parameters():
        if p.dtype == torch.float16:
            p.data = p.data.to(torch.bfloat16)
    return model


def test_bf16_on_cpu_with_fp32_master_prompts(tiny):
    bf16 = _to_bf16(tiny)
    text, image = PromptedTextEncoder(bf16), PromptedImageEncoder(bf16)
    assert text.dtype == image.dtype == bf16.dtype == torch.bfloat16
    emb, tok = _text_inputs(bf16)
    images = _images(bf16)
    with torch.no_grad():
        full = PromptedTextEncoder(bf16, TextPlan(truncate=False))(emb, tok).float()
        assert (full - bf16.encode_text(tok).float()).abs().max() <= 1e-5
        # truncated to the real prompt length: bf16 rounding differs, but it is no farther from fp32
        fp32 = PromptedTextEncoder(tiny)(emb.float(), tok)
        assert (text(emb, tok).float() - fp32).abs().max() <= 1.5 * (full - fp32).abs().max()
        assert (image(images).float() - bf16.encode_image(images).float()).abs().max() <= 1e-5
    deep_t = [p.requires_grad_() for p in _prompts(2, 2, 64, seed=9)]
    shallow = torch.randn(2, 128).requires_grad_()
    deep_v = [p.requires_grad_() for p in _prompts(2, 2, 128, seed=10)]
    t = text(emb, tok, deep_t)
    v = image(images, shallow, deep_v)
    assert t.dtype == v.dtype == torch.bfloat16
    with torch.no_grad():
        t32 = PromptedTextEncoder(tiny)(emb.float(), tok, deep_t)
        assert (t.float() - t32).abs().max() <= 0.1 * t32.abs().max()
    (t.float().sum() + v.float().sum()).backward()
    for p in [*deep_t, shallow, *deep_v]:
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
