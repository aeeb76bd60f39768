"""Baseline prompt learners on the tiny random CLIP ("ViT-Tiny/16"): numerical equivalences.

Proves: CoOp's three class-token layouts place exactly the right embeddings; CTX_INIT rules;
CoOp initialised from the template prefix reproduces zero-shot CLIP; CoCoOp with a zero Meta-Net
output equals CoOp; CoCoOp's batched text encoding equals the per-image loop of the official code
(with and without chunking); ZeroshotCLIP2's ensemble average; IVLP/VPT prompt placement, deep
prompts taking effect and the official key mapping.
"""
import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from trainers.cocoop import CoCoOpCLIP
from trainers.coop import CoOpCLIP, CoOpPromptLearner, token_layout
from trainers.ivlp import IVLPCLIP, legacy_prompt_keys
from trainers.templates import IMAGENET_TEMPLATES_SELECT
from trainers.vpt import VPTCLIP
from trainers.zsclip import ZeroshotCLIPModel, template_text_features

CLASSNAMES = ["golden_retriever", "cat", "sea lion", "hot air balloon"]


@pytest.fixture(scope="module")
def clip_model():
    return build_random_clip("ViT-Tiny/16", seed=0).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def reference_text_features(clip_model, texts):
    """Vanilla CLIP text features (independent of our encoders)."""
    with torch.no_grad():
        return clip_model.encode_text(tokenize(texts))


# ----------------------------------------------------------------------------------------- CoOp
def name_token_ids(name):
    tokens = tokenize([name.replace("_", " ")])[0]
    return tokens[1:int(tokens.argmax())]


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_coop_class_token_layouts(clip_model, position):
    torch.manual_seed(0)
    n_ctx = 4
    learner = CoOpPromptLearner(clip_model, CLASSNAMES, n_ctx=n_ctx, position=position)
    prompts = learner()
    emb = clip_model.token_embedding
    for c, name in enumerate(CLASSNAMES):
        ids = name_token_ids(name)
        length = len(ids)
        assert learner.name_lens[c] == length
        ctx = learner.ctx
        name_emb = emb(ids)
        if position == "end":
            expected = [ctx, name_emb]
        elif position == "front":
            expected = [name_emb, ctx]
        else:
            expected = [ctx[: n_ctx // 2], name_emb, ctx[n_ctx // 2:]]
        body = torch.cat(expected)
        assert torch.equal(prompts[c, 0], emb.weight[49406])  # SOS
        assert torch.allclose(prompts[c, 1:1 + n_ctx + length], body)
        # '.', EOT and padding follow unchanged, and the EOT position is the tokenized one
        full = tokenize([" ".join(["X"] * n_ctx) + " " + name.replace("_", " ") + "."])[0]
        rest = full[1 + n_ctx + length:]
        assert torch.allclose(prompts[c, 1 + n_ctx + length:], emb(rest))
        assert int(learner.tokenized_prompts[c].argmax()) == int(full.argmax())


def test_coop_layout_rejects_unknown_position():
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        token_layout("start", 4, [1], 77)


def test_coop_csc_and_ctx_init_rules(clip_model):
    csc = CoOpPromptLearner(clip_model, CLASSNAMES, n_ctx=3, csc=True)
    assert tuple(csc.ctx.shape) == (len(CLASSNAMES), 3, 64)
    prompts = csc()
    assert not torch.allclose(prompts[0, 1:4], prompts[1, 1:4])  # one context per class
    init = CoOpPromptLearner(clip_model, CLASSNAMES, n_ctx=16, ctx_init="a photo of a", csc=True)
    assert tuple(init.ctx.shape) == (4, 64)  # n_ctx = number of words, CSC ignored
    words = tokenize(["a photo of a"])[0][1:5]
    assert torch.equal(init.ctx.detach(), clip_model.token_embedding(words).detach())
    assert init.ctx.dtype == torch.float32


def test_coop_random_init_std(clip_model):
    torch.manual_seed(0)
    learner = CoOpPromptLearner(clip_model, CLASSNAMES * 50, n_ctx=16, csc=True)
    assert abs(learner.ctx.detach().std().item() - 0.02) < 1e-3
    assert abs(learner.ctx.detach().mean().item()) < 1e-3


def test_coop_from_template_prefix_equals_zero_shot(clip_model, images):
    coop = CoOpCLIP(clip_model, CLASSNAMES, ctx_init="a photo of a")
    zs = ZeroshotCLIPModel(clip_model, CLASSNAMES, ["a photo of a {}."])
    ref = reference_text_features(clip_model, [f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
    torch.testing.assert_close(coop.text_features(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(coop(images), zs(images), atol=1e-4, rtol=1e-5)


# --------------------------------------------------------------------------------------- CoCoOp
def test_cocoop_zero_meta_net_equals_coop(clip_model, images):
    torch.manual_seed(0)
    cocoop = CoCoOpCLIP(clip_model, CLASSNAMES, n_ctx=4)
    coop = CoOpCLIP(clip_model, CLASSNAMES, n_ctx=4)
    with torch.no_grad():
        coop.prompt_learner.ctx.copy_(cocoop.prompt_learner.ctx)
    assert not torch.allclose(cocoop(images), coop(images), atol=1e-3)  # the Meta-Net matters ...
    torch.nn.init.zeros_(cocoop.prompt_learner.meta_net.linear2.weight)
    torch.nn.init.zeros_(cocoop.prompt_learner.meta_net.linear2.bias)
    torch.testing.assert_close(cocoop(images), coop(images), atol=1e-4, rtol=1e-5)  # ... and only it


def official_cocoop_logits(model, images):
    """The official per-image loop: Meta-Net bias, one prompt set and one text-encoder call per image."""
    learner = model.prompt_learner
    img = F.normalize(model.image_encoder(images).float(), dim=-1)
    rows = []
    for f in img:
        bias = learner.meta_net(f.unsqueeze(0))  # [1, D]
        ctx = (learner.ctx + bias).unsqueeze(0).expand(learner.n_cls, -1, -1)
        prompts = torch.cat([learner.token_prefix, ctx, learner.token_suffix], dim=1)
        txt = F.normalize(model.text_encoder(prompts, learner.tokenized_prompts).float(), dim=-1)
        rows.append(model.logit_scale.exp() * f @ txt.t())
    return torch.stack(rows)


@pytest.mark.parametrize("max_sequences,expected_calls", [(4096, 1), (2 * len(CLASSNAMES), 2), (1, 3)])
def test_cocoop_batched_equals_per_image_loop(clip_model, images, max_sequences, expected_calls):
    torch.manual_seed(0)
    model = CoCoOpCLIP(clip_model, CLASSNAMES, ctx_init="a photo of a")
    model.MAX_TEXT_SEQUENCES = max_sequences
    calls = count_calls(model.text_encoder)
    logits = model(images)
    assert len(calls) == expected_calls  # ceil(B / max(1, max_sequences // C)) encoder calls
    torch.testing.assert_close(logits, official_cocoop_logits(model, images), atol=1e-4, rtol=1e-5)


def test_cocoop_meta_net_shapes_and_names(clip_model):
    model = CoCoOpCLIP(clip_model, CLASSNAMES, ctx_init="a photo of a")
    names = {n: tuple(p.shape) for n, p in model.prompt_learner.named_parameters()}
    e = clip_model.visual.output_dim  # 96 -> hidden 6
    assert names == {"ctx": (4, 64), "meta_net.linear1.weight": (e // 16, e), "meta_net.linear1.bias": (e // 16,),
                     "meta_net.linear2.weight": (64, e // 16), "meta_net.linear2.bias": (64,)}
    assert set(model.prompt_learner.state_dict()) == set(names) | {"token_prefix", "token_suffix"}


# ------------------------------------------------------------------------------------ zero-shot
def test_zeroshot_ensemble_average(clip_model, images):
    templates = list(IMAGENET_TEMPLATES_SELECT) + ["a photo of a {}."]
    model = ZeroshotCLIPModel(clip_model, CLASSNAMES, templates)
    per = [F.normalize(reference_text_features(clip_model, [t.format(n.replace("_", " ")) for n in CLASSNAMES]),
                       dim=-1) for t in templates]
    expected = F.normalize(torch.stack(per).mean(0), dim=-1)
    torch.testing.assert_close(model.text_features(), expected, atol=1e-5, rtol=1e-5)
    single = ZeroshotCLIPModel(clip_model, CLASSNAMES, ["{} texture."]).text_features()
    assert not torch.allclose(single, expected, atol=1e-3)
    calls = count_calls(model.text_encoder)
    model(images)
    model(images)
    assert calls == []  # fixed features: no text encoding after build
    assert not any("fixed" in key for key in model.state_dict())  # never saved


def test_template_text_features_needs_a_template(clip_model):
    with pytest.raises(ValueError, match="template"):
        template_text_features(clip_model, None, CLASSNAMES, [])


# ----------------------------------------------------------------------------------- IVLP / VPT
def test_ivlp_shallow_text_equals_template_and_deep_prompts_matter(clip_model, images):
    torch.manual_seed(0)
    model = IVLPCLIP(clip_model, CLASSNAMES, n_ctx_text=4, n_ctx_vision=2, ctx_init="a photo of a",
                     depth_text=1, depth_vision=0)
    ref = reference_text_features(clip_model, [f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
    torch.testing.assert_close(model.text_features(), ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.image_features(images), clip_model.encode_image(images))
    deep = IVLPCLIP(clip_model, CLASSNAMES, n_ctx_text=4, n_ctx_vision=2, ctx_init="a photo of a",
                    depth_text=3, depth_vision=3)
    assert not torch.allclose(deep.text_features(), ref, atol=1e-3)
    with torch.no_grad():
        assert not torch.allclose(deep.image_features(images), clip_model.encode_image(images), atol=1e-3)


def test_ivlp_maple_init_rule_keeps_remaining_words_fixed(clip_model):
    model = IVLPCLIP(clip_model, CLASSNAMES, n_ctx_text=2, n_ctx_vision=2, ctx_init="a photo of a",
                     depth_text=1, depth_vision=1)
    learner = model.prompt_learner
    words = tokenize(["a photo of a"])[0]
    assert torch.equal(learner.ctx.detach(), clip_model.token_embedding(words[1:3]).detach())
    # "of a" stays in the fixed suffix, followed by the class name
    assert torch.equal(learner.token_suffix[0, :2], clip_model.token_embedding(words[3:5]).detach())
    torch.testing.assert_close(model.text_features(), reference_text_features(
        clip_model, [f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES]), atol=1e-5, rtol=1e-5)


def test_ivlp_parameter_shapes_and_depth_checks(clip_model):
    model = IVLPCLIP(clip_model, CLASSNAMES, n_ctx_text=2, n_ctx_vision=3, ctx_init="", depth_text=3,
                     depth_vision=2)
    shapes = {n: tuple(p.shape) for n, p in model.prompt_learner.named_parameters()}
    assert shapes == {"ctx": (2, 64), "text_prompts.0": (2, 64), "text_prompts.1": (2, 64),
                      "vision.vision_ctx": (3, 128), "vision.vision_prompts.0": (3, 128)}
    with pytest.raises(ValueError, match="PROMPT_DEPTH_VISION"):
        IVLPCLIP(clip_model, CLASSNAMES, 2, 2, "a photo of a", depth_text=1, depth_vision=12)
    with pytest.raises(ValueError, match="PROMPT_DEPTH_TEXT"):
        IVLPCLIP(clip_model, CLASSNAMES, 0, 2, "a photo of a", depth_text=1, depth_vision=1)
    with pytest.raises(ValueError, match="N_CTX_TEXT=4 exceeds"):
        IVLPCLIP(clip_model, CLASSNAMES, 4, 2, "a photo", depth_text=1, depth_vision=1)


def test_ivlp_text_depth_zero_is_the_fixed_prompt(clip_model):
    model = IVLPCLIP(clip_model, CLASSNAMES, n_ctx_text=2, n_ctx_vision=2, ctx_init="", depth_text=0,
                     depth_vision=1)
    assert [n for n, _ in model.prompt_learner.named_parameters()] == ["vision.vision_ctx"]
    ref = reference_text_features(clip_model, [f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
    torch.testing.assert_close(model.text_features(), ref, atol=1e-5, rtol=1e-5)


def test_vpt_fixed_text_and_official_keys(clip_model, images):
    model = VPTCLIP(clip_model, CLASSNAMES, n_ctx_vision=2, depth_vision=3)
    ref = reference_text_features(clip_model, [f"a photo of a {n.replace('_', ' ')}." for n in CLASSNAMES])
    torch.testing.assert_close(model.text_features(), F.normalize(ref, dim=-1), atol=1e-5, rtol=1e-5)
    calls = count_calls(model.text_encoder)
    model(images)
    assert calls == []
    official = {"image_encoder.VPT": torch.full((2, 128), 1.0),
                "image_encoder.transformer.resblocks.1.VPT_shallow": torch.full((2, 128), 2.0),
                "image_encoder.transformer.resblocks.2.VPT_shallow": torch.full((2, 128), 3.0),
                "image_encoder.conv1.weight": torch.zeros(1)}
    mapped = model.load_legacy_state_dict(official)
    assert set(mapped) == {"prompt_learner.vision_ctx", "prompt_learner.vision_prompts.0",
                           "prompt_learner.vision_prompts.1", "image_encoder.conv1.weight"}
    model.prompt_learner.load_state_dict({k[len("prompt_learner."):]: v for k, v in mapped.items()
                                          if k.startswith("prompt_learner.")})
    assert model.prompt_learner.vision_prompts[1].detach().eq(3.0).all()
    with pytest.raises(ValueError, match="PROMPT_DEPTH_VISION"):
        VPTCLIP(clip_model, CLASSNAMES, n_ctx_vision=2, depth_vision=0)


def test_ivlp_official_key_mapping():
    official = {"module.image_encoder.VPT": 1, "image_encoder.transformer.resblocks.8.VPT_shallow": 2,
                "text_encoder.transformer.resblocks.1.VPT_shallow": 3, "prompt_learner.ctx": 4,
                "text_encoder.transformer.resblocks.1.attn.in_proj_weight": 5}
    assert legacy_prompt_keys(official) == {
        "prompt_learner.vision.vision_ctx": 1, "prompt_learner.vision.vision_prompts.7": 2,
        "prompt_learner.text_prompts.0": 3, "prompt_learner.ctx": 4,
        "text_encoder.transformer.resblocks.1.attn.in_proj_weight": 5}


# ------------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("dtype,ctx_dtype", [(torch.float16, torch.float16), (torch.bfloat16, torch.float32)])
def test_context_dtype_follows_backbone(dtype, ctx_dtype, images):
    """CoOp/CoCoOp context (and Meta-Net) is fp16 only on an fp16 backbone; IVLP/VPT prompts stay fp32."""
    from trainers.base import cast_clip

    low = cast_clip(build_random_clip("ViT-Tiny/16", seed=0), dtype)
    coop = CoOpCLIP(low, CLASSNAMES, n_ctx=4)
    cocoop = CoCoOpCLIP(low, CLASSNAMES, n_ctx=4)
    ivlp = IVLPCLIP(low, CLASSNAMES, 2, 2, "a photo of a", depth_text=2, depth_vision=2)
    assert coop.prompt_learner.ctx.dtype == ctx_dtype
    assert {p.dtype for p in cocoop.prompt_learner.parameters()} == {ctx_dtype}
    assert {p.dtype for p in ivlp.prompt_learner.parameters()} == {torch.float32}
    for model in (coop, cocoop, ivlp):
        logits = model(images)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        logits.sum().backward()
        assert all(p.grad is not None for p in model.prompt_learner.parameters())
