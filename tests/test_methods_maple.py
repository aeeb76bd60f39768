"""MaPLe model on the tiny backbone (ViT-Tiny/16: text width 64, vision width 128, 3 blocks).

Proves: prompt-learner structure and initialisation (ctx from the first N_CTX words, "of a" fixed,
identical-start projections, widths from the backbone), the vision/text prompt wiring against the
prompted encoders, PROMPT_DEPTH 1 and range errors, gradient reach, and bf16 on CPU.
"""
import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from engine.config import get_cfg_default
from trainers.config import extend_cfg
from trainers.maple import MultiModalCLIP, MultiModalPromptLearner

CLASSNAMES = ["cat", "sea_lion", "fire truck"]


def make_cfg(**maple):
    cfg = extend_cfg(get_cfg_default())
    cfg.MODEL.BACKBONE.NAME = "ViT-Tiny/16"
    cfg.INPUT.SIZE = (32, 32)
    cfg.TRAINER.MAPLE.PREC = "fp32"
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 3
    for key, value in maple.items():
        cfg.TRAINER.MAPLE[key] = value
    return cfg


@pytest.fixture(scope="module")
def clip_model():
    return build_random_clip("ViT-Tiny/16", seed=0)


def build(clip_model, **maple):
    torch.manual_seed(0)
    cfg = make_cfg(**maple)
    return MultiModalCLIP(clip_model, CLASSNAMES, MultiModalPromptLearner(cfg, clip_model, CLASSNAMES))


def test_parameter_names_shapes_follow_backbone_widths(clip_model):
    model = build(clip_model)
    shapes = {k: tuple(v.shape) for k, v in model.prompt_learner.named_parameters()}
    assert shapes == {
        "ctx": (2, 64), "proj.weight": (128, 64), "proj.bias": (128,),
        "compound_prompts_text.0": (2, 64), "compound_prompts_text.1": (2, 64),
        "compound_prompt_projections.0.weight": (128, 64), "compound_prompt_projections.0.bias": (128,),
        "compound_prompt_projections.1.weight": (128, 64), "compound_prompt_projections.1.bias": (128,),
    }
    buffers = set(model.prompt_learner.state_dict()) - set(shapes)
    assert buffers == {"token_prefix", "token_suffix"}


def test_projections_start_identical_but_are_independent(clip_model):
    pl = build(clip_model).prompt_learner
    a, b = pl.compound_prompt_projections
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.data_ptr() != b.weight.data_ptr()
    assert not torch.equal(a.weight, pl.proj.weight)


def test_ctx_from_first_words_and_of_a_stay_fixed(clip_model):
    pl = build(clip_model).prompt_learner
    tokens = tokenize(["a photo of a sea lion."])
    emb = clip_model.token_embedding(tokens)[0]
    assert torch.equal(pl.ctx.data, emb[1:3])  # "a", "photo"
    sentences = pl.sentence_embeddings()
    assert torch.equal(sentences[1], emb)  # whole sentence "[SOS] a photo of a sea lion. [EOT]..."
    assert torch.equal(pl.tokenized_prompts[1], tokens[0])
    with torch.no_grad():
        pl.ctx.add_(1.0)
    changed = (pl.sentence_embeddings()[1] != emb).any(-1).nonzero().flatten().tolist()
    assert changed == [1, 2]  # only the learnable positions move; "of a" (3, 4) are fixed words


def test_random_context_without_init_or_long_n_ctx(clip_model):
    for kwargs in ({"CTX_INIT": ""}, {"N_CTX": 5}):
        pl = build(clip_model, **kwargs).prompt_learner
        n = pl.ctx.shape[0]
        expected = tokenize([" ".join(["X"] * n) + " cat."])[0]
        assert torch.equal(pl.tokenized_prompts[0], expected)
        assert 0.005 < pl.ctx.std().item() < 0.05


def test_prompts_reach_encoders_as_specified(clip_model):
    model = build(clip_model)
    pl = model.prompt_learner
    image = torch.randn(2, 3, 32, 32)
    shallow = pl.proj(pl.ctx)
    deep = [layer(p) for layer, p in zip(pl.compound_prompt_projections, pl.compound_prompts_text)]
    img_ref = model.image_encoder(image, shallow, deep)
    txt_ref = model.text_encoder(pl.sentence_embeddings(), pl.tokenized_prompts, list(pl.compound_prompts_text))
    assert torch.allclose(model.image_features(image), img_ref)
    assert torch.allclose(model.text_features(), txt_ref)
    logits = model(image)
    expected = clip_model.logit_scale.exp() * F.normalize(img_ref, dim=-1) @ F.normalize(txt_ref, dim=-1).t()
    assert logits.shape == (2, 3) and torch.allclose(logits, expected, atol=1e-5)
    # every deep projection matters (deep prompts are really inserted)
    with torch.no_grad():
        pl.compound_prompt_projections[1].bias.add_(1.0)
    assert not torch.allclose(model.image_features(image), img_ref)


def test_depth_one_is_shallow_maple(clip_model):
    model = build(clip_model, PROMPT_DEPTH=1)
    pl = model.prompt_learner
    assert len(pl.compound_prompts_text) == 0 and len(pl.compound_prompt_projections) == 0
    image = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model.image_features(image), model.image_encoder(image, pl.proj(pl.ctx), None))
    loss = F.cross_entropy(model(image), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in pl.parameters())


@pytest.mark.parametrize("depth", [0, 4])
def test_depth_out_of_range_is_one_line_error(clip_model, depth):
    with pytest.raises(ValueError, match=r"TRAINER\.MAPLE\.PROMPT_DEPTH must be in 1\.\.3"):
        build(clip_model, PROMPT_DEPTH=depth)


def test_every_parameter_gets_a_gradient(clip_model):
    model = build(clip_model)
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for name, param in model.prompt_learner.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bf16_backbone_forward_backward(clip_model):
    from trainers.base import cast_clip

    bf16 = cast_clip(build_random_clip("ViT-Tiny/16", seed=0), torch.bfloat16)
    torch.manual_seed(0)
    model = MultiModalCLIP(bf16, CLASSNAMES, MultiModalPromptLearner(make_cfg(), bf16, CLASSNAMES))
    assert model.prompt_learner.ctx.dtype == torch.float32  # fp32 master copies
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.dtype == torch.float32
