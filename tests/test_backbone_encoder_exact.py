"""The prompted encoders' fast paths are bit-identical to CLIP's own modules.

``self_attention`` (q/k/v as views of the packed in-projection) against ``nn.MultiheadAttention``,
``replace_tokens`` in place against ``torch.cat``, and both encoders end to end (features, last-K
hidden states, gradients of every prompt and of the token embeddings) against a reference that runs
CLIP's blocks through their modules with ``torch.cat`` insertion: ``torch.equal``, not a tolerance.
Widths: the tiny CLIP and the deterministic CLIP with ViT-B widths (text 512, vision 768).
"""
import pytest
import torch

from engine.backbone import PromptedImageEncoder, PromptedTextEncoder, build_random_clip, load_clip, tokenize
from engine.backbone._prompts import replace_tokens
from engine.backbone.prompted_text import self_attention
from engine.backbone.text_plan import TextPlan
from tests.fixtures_backbone import backbone_cfg, det_clip_file  # noqa: F401  (fixture)

CLASSNAMES = ["circle", "red square", "a very long name of a triangle", "star", "hexagon"]


@pytest.fixture(scope="module")
def tiny():
    return build_random_clip("ViT-Tiny/16", seed=0)


@pytest.fixture(scope="module")
def det(det_clip_file):  # noqa: F811
    return load_clip(backbone_cfg("ViT-B/16", path=det_clip_file[0], random_init=False, size=(32, 32)))


@pytest.fixture(params=["tiny", "det"])
def model(request):
    return request.getfixturevalue(request.param)


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _module_block(block, x, mask):
    """CLIP's residual block with attention through the ``nn.MultiheadAttention`` module itself."""
    h = block.ln_1(x)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    return x + block.mlp(block.ln_2(x))


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


@pytest.mark.parametrize("masked", [True, False])
def test_self_attention_equals_multihead_attention_bitwise(model, masked):
    block = model.transformer.resblocks[0] if masked else model.visual.transformer.resblocks[0]
    length, width = (77, model.transformer.width) if masked else (9, model.visual.transformer.width)
    mask = torch.full((length, length), float("-inf")).triu_(1) if masked else None
    x = _randn(length, 5, width, seed=1)
    grad = _randn(length, 5, width, seed=2)
    outs = []
    for fn in (lambda h: block.attn(h, h, h, need_weights=False, attn_mask=mask)[0],
               lambda h: self_attention(block.attn, h, mask)):
        h = _leaf(x)
        y = fn(h)
        y.backward(grad)
        outs.append((y.detach(), h.grad))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    with torch.no_grad():  # no gradient: the module itself (its inference path)
        assert torch.equal(self_attention(block.attn, x, mask), block.attn(x, x, x, need_weights=False,
                                                                           attn_mask=mask)[0])


def test_replace_tokens_in_place_equals_cat():
    src, tok = _randn(7, 3, 4, seed=3), _randn(2, 3, 4, seed=4)
    grad = _randn(7, 3, 4, seed=5)
    results = []
    for in_place in (False, True):
        a, p = _leaf(src), _leaf(tok)
        y = replace_tokens(a * 1.0, 1, p, in_place=in_place)  # a * 1.0: a fresh non-leaf, as a block output
        y.backward(grad)
        results.append((y.detach(), a.grad, p.grad))
    for u, v in zip(*results):
        assert torch.equal(u, v)
    assert torch.equal(results[1][1][1:3], torch.zeros(2, 3, 4))


def _reference_text(model, emb, tok, deep, k, length):
    """Blocks through their modules, deep prompts by torch.cat, the causal mask cropped to ``length``."""
    mask = torch.full((77, 77), float("-inf")).triu_(1)[:length, :length]
    x = (emb[:, :length] + model.positional_embedding[:length]).permute(1, 0, 2)
    blocks = model.transformer.resblocks
    hidden = []
    for i, block in enumerate(blocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1)
            x = torch.cat([x[:1], p, x[1 + p.shape[0]:]], dim=0)
        x = _module_block(block, x, mask)
        if i >= len(blocks) - k:
            hidden.append(x.permute(1, 0, 2))
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tok.argmax(-1)] @ model.text_projection, hidden


@pytest.mark.parametrize("truncate,memory_plan,k", [(False, "off", 1), (False, "off", 3), (True, "off", 2),
                                                     (False, "on", 1), (False, "off", 12)])
def test_text_encoder_bitwise_equal_to_module_blocks(model, truncate, memory_plan, k):
    """Features, hidden states and gradients (embeddings and each deep prompt): identical bits. k = 12
    keeps every block's output, so no prompt may be written in place. Memory plan ``on``: one chunk,
    checkpointed (several chunks change the matrix shapes, hence the float summation order)."""
    layers = model.transformer.layers
    k = min(k, layers)
    tok = tokenize([f"a photo of a {c}." for c in CLASSNAMES])
    emb0 = model.token_embedding(tok).detach()
    width = model.transformer.width
    deep0 = [_randn(2, width, seed=10 + j) for j in range(min(3, layers - 1))]
    enc = PromptedTextEncoder(model, plan=TextPlan(truncate=truncate, memory_plan=memory_plan))
    length = enc.sequence_length(tok, deep0) if truncate else 77
    runs = []
    for fn in (lambda e, d: enc(e, tok, d, return_hidden=k), lambda e, d: _reference_text(model, e, tok, d, k, length)):
        emb, deep = _leaf(emb0), [_leaf(p) for p in deep0]
        feats, hidden = fn(emb, deep)
        loss = feats.square().sum() + sum((h * (j + 1)).sum() for j, h in enumerate(hidden))
        loss.backward()
        runs.append((feats.detach(), [h.detach() for h in hidden], emb.grad, [p.grad for p in deep]))
    ours, ref = runs
    assert torch.equal(ours[0], ref[0])
    assert len(ours[1]) == len(ref[1]) == k and all(torch.equal(a, b) for a, b in zip(ours[1], ref[1]))
    assert torch.equal(ours[2], ref[2])
    assert all(torch.equal(a, b) for a, b in zip(ours[3], ref[3]))


def _reference_image(model, images, shallow, deep):
    v = model.visual
    x = v.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1) + v.positional_embedding
    x = torch.cat([x, shallow.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = v.ln_pre(x).permute(1, 0, 2)
    n = shallow.shape[0]
    for i, block in enumerate(v.transformer.resblocks):
        if 1 <= i <= len(deep):
            x = torch.cat([x[:-n], deep[i - 1].unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
        x = _module_block(block, x, None)
    return v.ln_post(x.permute(1, 0, 2)[:, 0, :]) @ v.proj


def test_image_encoder_bitwise_equal_to_module_blocks(model):
    v = model.visual
    layers, width = v.transformer.layers, v.transformer.width
    images = _randn(3, 3, v.input_resolution, v.input_resolution, seed=20)
    shallow0 = _randn(2, width, seed=21)
    deep0 = [_randn(2, width, seed=22 + j) for j in range(min(3, layers - 1))]
    enc = PromptedImageEncoder(model)
    runs = []
    for fn in (lambda s, d: enc(images, s, d), lambda s, d: _reference_image(model, images, s, d)):
        shallow, deep = _leaf(shallow0), [_leaf(p) for p in deep0]
        feats = fn(shallow, deep)
        feats.square().sum().backward()
        runs.append((feats.detach(), shallow.grad, [p.grad for p in deep]))
    ours, ref = runs
    assert torch.equal(ours[0], ref[0])
    assert torch.equal(ours[1], ref[1])
    assert all(torch.equal(a, b) for a, b in zip(ours[2], ref[2]))
