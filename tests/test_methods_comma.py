"""CoMMA model on the tiny backbone (ViT-Tiny/16: text width 64, vision width 128, 3 blocks).

Proves: official parameter names/shapes, the generator equation and the layer-by-layer chain,
TRAIN_GENERATOR False/True (identical forward values; exact sets of parameters that get gradients),
the knowledge loss (formula, 0 when the learned sentence is the template sentence, > 0 otherwise,
real last-K blocks, targets computed once and never saved), legacy key handling, bf16 on CPU.
"""
import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from engine.config import get_cfg_default
from trainers.base import cast_clip
from trainers.comma import CoMMACLIP, PromptGenerator

CLASSNAMES = ["cat", "sea_lion", "fire truck"]
TEXT_PROMPT_PARAMS = {"ctx", "proj.weight", "proj.bias", "compound_prompts_text"}


def make_cfg(dataset="Shapes", template="", **comma):
    from trainers.config import extend_cfg

    cfg = extend_cfg(get_cfg_default())
    cfg.MODEL.BACKBONE.NAME = "ViT-Tiny/16"
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATASET.NAME = dataset
    cfg.DATASET.TEMPLATE = template
    cfg.TRAINER.COMMA.PREC = "fp32"
    cfg.TRAINER.COMMA.PROMPT_DEPTH = 3
    for key, value in comma.items():
        cfg.TRAINER.COMMA[key] = value
    return cfg


@pytest.fixture(scope="module")
def clip_model():
    return build_random_clip("ViT-Tiny/16", seed=0)


def build(clip_model, classnames=CLASSNAMES, **kwargs):
    torch.manual_seed(0)
    return CoMMACLIP(make_cfg(**kwargs), clip_model, classnames)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 1])


def test_parameter_names_and_shapes(clip_model):
    pl = build(clip_model).prompt_learner
    shapes = {k: tuple(v.shape) for k, v in pl.named_parameters()}
    gen = {"fc.weight": (128, 64), "fc.bias": (128,), "ln.weight": (128,), "ln.bias": (128,),
           "mlp.0.weight": (32, 128), "mlp.0.bias": (32,), "mlp.2.weight": (128, 32), "mlp.2.bias": (128,)}
    expected = {"ctx": (2, 64), "proj.weight": (128, 64), "proj.bias": (128,), "compound_prompts_text": (2, 2, 64)}
    expected.update({f"compound_prompt_projections_image_base.{k}": s for k, s in gen.items()})
    expected.update({f"compound_prompt_projections_image.0.{k}": s for k, s in gen.items()})
    assert shapes == expected
    assert set(pl.state_dict()) - set(shapes) == {"token_prefix", "token_suffix"}


def test_generator_equation():
    torch.manual_seed(0)
    gen = PromptGenerator(text_width=6, vision_width=8)
    v, t = torch.randn(3, 8), torch.randn(3, 6)
    key = t @ gen.fc.weight.t() + gen.fc.bias
    attn = torch.softmax(v @ key.t() / 8 ** 0.5, dim=-1)
    hidden = F.layer_norm(attn @ key, (8,), gen.ln.weight, gen.ln.bias)
    expected = gen.mlp[2](torch.relu(gen.mlp[0](hidden)))
    assert torch.allclose(gen(v, t), expected, atol=1e-6)


def test_vision_prompts_are_generated_layer_by_layer(clip_model):
    pl = build(clip_model).prompt_learner
    shallow, deep = pl.vision_prompts()
    v0 = pl.proj(pl.ctx)
    v1 = pl.compound_prompt_projections_image_base(v0, pl.ctx)
    v2 = pl.compound_prompt_projections_image[0](v1, pl.compound_prompts_text[0])
    assert torch.allclose(shallow, v0) and len(deep) == 2
    assert torch.allclose(deep[0], v1, atol=1e-6) and torch.allclose(deep[1], v2, atol=1e-6)
    # text prompts: J-1 rows of the one parameter, inserted before text blocks 2..J
    _, text_deep = pl.text_prompts()
    assert len(text_deep) == 2 and torch.equal(text_deep[1], pl.compound_prompts_text[1])


def _grads(model):
    image, label = batch()
    loss, summary = model.compute_loss(image, label)
    loss.backward()
    return {k: p.grad for k, p in model.prompt_learner.named_parameters()}, summary


def test_official_mode_gradient_pattern(clip_model):
    model = build(clip_model)
    generator = [k for k, _ in model.prompt_learner.named_parameters() if k.startswith("compound_prompt_projections")]
    assert len(generator) == 16
    assert all(not p.requires_grad for p in model.prompt_learner.generator_parameters())
    grads, summary = _grads(model)
    got = {k for k, g in grads.items() if g is not None}
    assert got == TEXT_PROMPT_PARAMS
    assert all(grads[k].abs().sum() > 0 for k in got)
    assert list(summary) == ["loss", "loss_kd"]


def test_official_mode_gradients_ignore_the_generated_prompts(clip_model):
    """ctx/proj/text-prompt gradients equal those of a model whose deep vision prompts are constants."""
    official = build(clip_model)
    grads, _ = _grads(official)
    const = build(clip_model, TRAIN_GENERATOR=True)
    const.prompt_learner.load_state_dict(official.prompt_learner.state_dict())
    with torch.no_grad():
        shallow, deep = const.prompt_learner.vision_prompts()
    original = const.prompt_learner.vision_prompts
    const.prompt_learner.vision_prompts = lambda: (const.prompt_learner.proj(const.prompt_learner.ctx), deep)
    const_grads, _ = _grads(const)
    const.prompt_learner.vision_prompts = original
    for name in TEXT_PROMPT_PARAMS:
        assert torch.allclose(grads[name], const_grads[name], atol=1e-6), name


def test_paper_mode_trains_everything_with_identical_forward(clip_model):
    official, paper = build(clip_model), build(clip_model, TRAIN_GENERATOR=True)
    for a, b in zip(official.prompt_learner.state_dict().values(), paper.prompt_learner.state_dict().values()):
        assert torch.equal(a, b)  # same seeded init in both modes
    image, _ = batch()
    assert torch.allclose(official(image), paper(image), atol=1e-6)
    grads, _ = _grads(paper)
    missing = [k for k, g in grads.items() if g is None or g.abs().sum() == 0]
    assert missing == []
    # ctx gets extra gradient through the generator in paper mode
    official_grads, _ = _grads(official)
    assert not torch.allclose(grads["ctx"], official_grads["ctx"])


def _manual_hidden(clip_model, sentences, k):
    tokens = tokenize(sentences)
    x = (clip_model.token_embedding(tokens) + clip_model.positional_embedding).permute(1, 0, 2)
    outs = []
    for block in clip_model.transformer.resblocks:
        x = block(x)
        outs.append(x.permute(1, 0, 2))
    return outs[-k:]


def test_kd_targets_are_plain_clip_real_last_blocks(clip_model):
    model = build(clip_model, dataset="EuroSAT", LAST_LAYER=2)
    sentences = ["a centered satellite photo of cat.", "a centered satellite photo of sea lion.",
                 "a centered satellite photo of fire truck."]
    assert model.template_sentences() == sentences
    targets = model.kd_targets()
    expected = _manual_hidden(clip_model, sentences, 2)  # blocks 2 and 3 (0-based 1, 2): not block 2 twice
    assert len(targets) == 2
    for t, e in zip(targets, expected):
        assert t.shape == (3, 77, 64) and torch.allclose(t, e, atol=1e-5)
    assert not torch.allclose(targets[0], targets[1])


def test_learned_side_uses_real_last_blocks(clip_model):
    """With depth 1 and ctx = "a photo", the learned sentence is "a photo of a <class>."; its hidden
    states for LAST_LAYER 2 are those of plain CLIP's last two blocks, and L_kd is 0."""
    model = build(clip_model, template="a photo of a {}.", PROMPT_DEPTH=1, LAST_LAYER=2)
    _, hidden = model.encode_prompted_text(return_hidden=2, length=model.kd_length())
    expected = _manual_hidden(clip_model, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES], 2)
    for h, e in zip(hidden, expected):
        assert torch.allclose(h, e, atol=1e-5)
    assert model.knowledge_loss(hidden).item() <= 1e-6


def test_knowledge_loss_formula(clip_model):
    model = build(clip_model, LAST_LAYER=2)
    torch.manual_seed(3)
    hidden = [torch.randn(3, 77, 64), torch.randn(3, 77, 64)]
    targets = model.kd_targets()
    expected = sum(1 - F.cosine_similarity(h, t, dim=-1).mean() for h, t in zip(hidden, targets)) / 2
    assert torch.allclose(model.knowledge_loss(hidden), expected, atol=1e-6)


def test_knowledge_loss_zero_iff_learned_sentence_is_template(clip_model):
    image, label = batch()
    same = build(clip_model, template="a photo of a {}.", PROMPT_DEPTH=1, CTX_INIT="a photo of a")
    _, summary = same.compute_loss(image, label)
    assert abs(summary["loss_kd"]) <= 1e-6
    # deep text prompts change the sentence's hidden states; so do a different template or ctx
    for kwargs in ({"template": "a photo of a {}.", "PROMPT_DEPTH": 2},
                   {"dataset": "EuroSAT", "PROMPT_DEPTH": 1},
                   {"template": "a photo of a {}.", "PROMPT_DEPTH": 1, "CTX_INIT": ""}):
        _, summary = build(clip_model, **kwargs).compute_loss(image, label)
        assert summary["loss_kd"] > 1e-3, kwargs


def test_total_loss_is_ce_plus_weighted_kd(clip_model):
    model = build(clip_model, WEIGHT=2.5)
    image, label = batch()
    loss, summary = model.compute_loss(image, label)
    ce = F.cross_entropy(model(image), label)
    assert torch.allclose(loss, ce + 2.5 * summary["loss_kd"], atol=1e-5)
    assert summary["loss"] == pytest.approx(loss.item())


def test_kd_targets_computed_once_and_not_saved(clip_model, monkeypatch):
    model = build(clip_model)
    calls = []
    original = model.compute_kd_targets
    monkeypatch.setattr(model, "compute_kd_targets", lambda length: calls.append(1) or original(length))
    image, label = batch()
    for _ in range(3):
        loss, _ = model.compute_loss(image, label)
        loss.backward()
    assert len(calls) == 1
    assert not any(k.startswith("kd") or "target" in k for k in model.state_dict())
    model.logits_from(*model.forward_features(image))  # evaluation path: logits only
    model(image)
    assert len(calls) == 1


def test_legacy_image_prompt_key_is_dropped(clip_model):
    model = build(clip_model)
    sd = {"prompt_learner.ctx": torch.zeros(2, 64), "prompt_learner.compound_prompts_image": torch.zeros(2, 2, 128)}
    out = model.load_legacy_state_dict(dict(sd))
    assert set(out) == {"prompt_learner.ctx"}


@pytest.mark.parametrize("field,value", [("PROMPT_DEPTH", 4), ("LAST_LAYER", 0), ("LAST_LAYER", 4)])
def test_out_of_range_config_is_one_line_error(clip_model, field, value):
    with pytest.raises(ValueError, match=rf"TRAINER\.COMMA\.{field} must be in 1\.\.3"):
        build(clip_model, **{field: value})


def test_depth_one_has_no_generator(clip_model):
    model = build(clip_model, PROMPT_DEPTH=1)
    names = [k for k, _ in model.prompt_learner.named_parameters()]
    assert sorted(names) == ["compound_prompts_text", "ctx", "proj.bias", "proj.weight"]
    assert model.prompt_learner.compound_prompts_text.shape == (0, 2, 64)
    grads, _ = _grads(model)
    assert {k for k, g in grads.items() if g is not None} == {"ctx", "proj.weight", "proj.bias"}


@pytest.mark.parametrize("train_generator", [False, True])
def test_bf16_backbone_forward_backward(train_generator):
    bf16 = cast_clip(build_random_clip("ViT-Tiny/16", seed=0), torch.bfloat16)
    model = build(bf16, TRAIN_GENERATOR=train_generator)
    image, label = batch()
    loss, summary = model.compute_loss(image, label)
    assert torch.isfinite(loss) and summary["loss_kd"] > 0
    loss.backward()
    got = {k for k, p in model.prompt_learner.named_parameters() if p.grad is not None}
    assert (got == TEXT_PROMPT_PARAMS) != train_generator
    assert model.prompt_learner.ctx.grad.dtype == torch.float32
