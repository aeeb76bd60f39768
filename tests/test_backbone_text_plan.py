"""The text encoder's speed/memory plan changes no number (fp32, tiny random CLIP).

Proves, for every method: truncating each text pass to the longest real prompt gives the logits,
losses and gradients of the full 77-position computation; chunked + activation-checkpointed text
encoding gives the plain loss and gradients (and really recomputes); CoMMA's ``KD_TOKENS real``
equals a hand computation over each class's positions up to its EOT; ``KD_TOKENS all`` still runs
all 77 positions. Also the plan's config keys and their one-line errors.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import trainers  # noqa: F401  (registers every trainer)
from engine.backbone import build_random_clip, tokenize
from engine.backbone.prompted_text import default_text_plan
from engine.backbone.text_plan import TextPlan
from engine.config import ConfigError, get_cfg_default, merge_from_file
from engine.config.setup import validate_cfg
from repro.methods import METHODS as DECLARED
from repro.methods import get_method
from engine.trainer import TRAINER_REGISTRY
from trainers.config import extend_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# prompt lengths differ a lot on purpose: the longest sets the truncated length
CLASSNAMES = ["cat", "great white shark", "African bush elephant with a long trunk", "sea_lion", "ox"]
METHODS = [spec.trainer for spec in DECLARED.values()]  # every declared method
TRAINED = [spec.trainer for spec in DECLARED.values() if not spec.zero_shot]


def method_cfg(method, **node_opts):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    spec = get_method(method)
    merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", spec.config_dir,
                                      spec.base2new_cfg("shapes") + ".yaml"))
    cfg.MODEL.BACKBONE.NAME = "ViT-Tiny/16"
    cfg.MODEL.BACKBONE.RANDOM_INIT = True
    cfg.INPUT.SIZE = (32, 32)
    node = cfg.TRAINER[TRAINER_REGISTRY.get(method).CFG_NODE]
    node.PREC = "fp32"
    for key in list(node):  # every *PROMPT_DEPTH* key (prompt depths, TCP's insertion block) fits 3 blocks
        if "PROMPT_DEPTH" in key and isinstance(node[key], int) and not isinstance(node[key], bool):
            node[key] = min(int(node[key]), 3)
    for key, value in node_opts.items():
        node[key] = value
    return cfg


def build(method, plan=TextPlan(), classnames=CLASSNAMES, **node_opts):
    """The method's model exactly as its trainer builds it (same seed -> same initial prompts)."""
    cls = TRAINER_REGISTRY.get(method)
    trainer = cls.__new__(cls)
    trainer.cfg = method_cfg(method, **node_opts)
    clip_model = build_random_clip("ViT-Tiny/16", seed=0).eval()
    torch.manual_seed(0)
    with default_text_plan(plan):
        model = trainer.build_custom_model(clip_model, classnames)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("prompt_learner.") and param.requires_grad)
    return model.eval()


def batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.tensor([0, 2, 1, 4][:n])


def loss_and_grads(model, image, label):
    model.zero_grad(set_to_none=True)
    loss, summary = model.compute_loss(image, label)
    if isinstance(loss, dict):  # several losses (ProGrad): their sum carries every term's gradient
        loss = torch.stack([term.float() for term in loss.values()]).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), summary, grads


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def longest_prompt(model):
    tok = model.prompt_learner.tokenized_prompts if hasattr(model.prompt_learner, "tokenized_prompts") else None
    return int(tok.argmax(-1).max()) + 1 if tok is not None else None


@pytest.mark.parametrize("method", METHODS)
def test_truncation_leaves_logits_unchanged(method):
    image, _ = batch()
    full, short = build(method, TextPlan(truncate=False)), build(method, TextPlan(truncate=True))
    with torch.no_grad():
        want, got = full(image), short(image)
    assert rel(got, want) <= 1e-5
    assert short.text_encoder.last_shape is not None
    if method not in ("ZeroshotCLIP", "VPT"):  # fixed features were computed at build time
        assert full.text_encoder.last_shape[1] == 77
        assert short.text_encoder.last_shape[1] == longest_prompt(short) < 77


@pytest.mark.slow
@pytest.mark.parametrize("method", TRAINED)
def test_truncation_leaves_loss_and_gradients_unchanged(method):
    image, label = batch()
    opts = {"KD_TOKENS": "real"} if method == "CoMMA" else {}
    full = build(method, TextPlan(truncate=False), **opts)
    short = build(method, TextPlan(truncate=True), **opts)
    loss_full, _, grads_full = loss_and_grads(full, image, label)
    loss_short, _, grads_short = loss_and_grads(short, image, label)
    assert loss_short.item() == pytest.approx(loss_full.item(), rel=1e-5)
    assert grads_full and set(grads_short) == set(grads_full)
    for name, grad in grads_full.items():
        assert rel(grads_short[name], grad) <= 1e-5, name
    if method == "CoMMA":  # KD_TOKENS real: the training pass is truncated too
        assert short.text_encoder.last_shape[1] == longest_prompt(short)


def test_comma_kd_all_still_runs_every_position():
    model = build("CoMMA")  # KD_TOKENS all (official)
    loss_and_grads(model, *batch())
    assert model.text_encoder.last_shape == (len(CLASSNAMES), 77)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [0, 2])
@pytest.mark.parametrize("method", ["CoMMA", "MaPLe", "CoOp", "CoCoOp", "IVLP", "TCP"])
def test_memory_plan_equals_plain_computation(method, chunk_size):
    """Checkpointing alone (one chunk) is bit-identical. Chunks change only how fp32 BLAS kernels
    round (a different row count per matrix product; measured 7e-7..1e-6 relative on the tiny
    model), so chunked gradients are compared at 2e-6 and the loss at 1e-6."""
    image, label = batch()
    plain = build(method, TextPlan(memory_plan="off"))
    planned = build(method, TextPlan(memory_plan="on", chunk_size=chunk_size or 100))
    recomputed = []
    for block in planned.text_encoder.transformer.resblocks:
        block.mlp.register_forward_pre_hook(lambda *args: recomputed.append(torch.is_grad_enabled()))
    loss_plain, sum_plain, grads_plain = loss_and_grads(plain, image, label)
    loss_plan, sum_plan, grads_plan = loss_and_grads(planned, image, label)
    tol = 2e-6 if chunk_size else 0.0
    assert loss_plan.item() == pytest.approx(loss_plain.item(), rel=1e-6 if chunk_size else 0.0)
    assert sum_plan.keys() == sum_plain.keys()
    assert grads_plain and set(grads_plan) == set(grads_plain)
    for name, grad in grads_plain.items():
        assert rel(grads_plan[name], grad) <= tol, name
    # every block of every chunk ran in the forward and again (recomputed) in the backward pass
    rows, blocks = planned.text_encoder.last_shape[0], len(planned.text_encoder.transformer.resblocks)
    chunks = -(-rows // chunk_size) if chunk_size else 1
    assert rows >= len(CLASSNAMES)
    assert sum(recomputed) == 2 * blocks * chunks  # (CoMMA's L_kd targets are a separate no-grad pass)


def test_memory_plan_auto_threshold_and_chunks():
    plan = TextPlan(auto_tokens=100)
    assert not plan.active(rows=10, length=10) and plan.active(rows=11, length=10)
    assert plan.rows_per_chunk(rows=50, length=10) == 10
    assert TextPlan(memory_plan="on").active(1, 1) and not TextPlan(memory_plan="off").active(10**6, 77)
    assert TextPlan(memory_plan="on", chunk_size=3).rows_per_chunk(50, 77) == 3


@pytest.mark.parametrize("kwargs,match", [
    ({"memory_plan": "sometimes"}, "MODEL.TEXT_ENCODER.MEMORY_PLAN must be one of"),
    ({"chunk_size": -1}, "MODEL.TEXT_ENCODER.CHUNK_SIZE must be >= 0"),
    ({"auto_tokens": 0}, "MODEL.TEXT_ENCODER.AUTO_TOKENS must be >= 1"),
])
def test_plan_errors_are_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextPlan(**kwargs)


def test_plan_from_config_and_validation():
    cfg = method_cfg("MaPLe")
    assert TextPlan.from_cfg(cfg) == TextPlan()
    cfg.MODEL.TEXT_ENCODER.MEMORY_PLAN = "on"
    cfg.MODEL.TEXT_ENCODER.CHUNK_SIZE = 64
    cfg.MODEL.TEXT_ENCODER.TRUNCATE = False
    assert TextPlan.from_cfg(cfg) == TextPlan(truncate=False, memory_plan="on", chunk_size=64)
    cfg.MODEL.TEXT_ENCODER.MEMORY_PLAN = "maybe"
    with pytest.raises(ConfigError, match="MODEL.TEXT_ENCODER.MEMORY_PLAN"):
        validate_cfg(cfg)
    with pytest.raises(ValueError, match="TRAINER.COMMA.KD_TOKENS must be one of"):
        build("CoMMA", KD_TOKENS="some")


def test_comma_kd_tokens_real_equals_hand_computation():
    """L_kd(real) = mean_k [1 - sum_{c, t <= eot_c} cos(H~, H^) / sum_c (eot_c + 1)], from full passes."""
    model = build("CoMMA", KD_TOKENS="real", LAST_LAYER=2)
    image, label = batch()
    loss, summary = model.compute_loss(image, label)
    learner = model.prompt_learner
    with torch.no_grad():
        prompts, deep = learner.text_prompts()
        _, hidden = model.text_encoder(prompts, learner.tokenized_prompts, deep, return_hidden=2, length=77)
        _, target = model.text_encoder(model.kd_embedding, model.kd_tokenized, None, return_hidden=2, length=77)
        eot = learner.tokenized_prompts.argmax(-1)
        mask = torch.arange(77).unsqueeze(0) <= eot.unsqueeze(1)
        scores = []
        for h, t in zip(hidden, target):
            cos = F.cosine_similarity(h, t, dim=-1, eps=1e-7)
            scores.append(1 - cos[mask].sum() / mask.sum())
        expected = torch.stack(scores).mean().item()
    assert summary["loss_kd"] == pytest.approx(expected, rel=1e-5)
    # "all" averages over every position instead: a different number on the same model
    model.kd_tokens = "all"
    _, summary_all = model.compute_loss(image, label)
    assert summary_all["loss_kd"] != pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("prec_dtype", [torch.bfloat16])
def test_memory_plan_under_bf16_autocast(prec_dtype):
    """Chunked + checkpointed passes honour autocast: finite loss/gradients close to fp32."""
    image, label = batch()
    fp32 = build("MaPLe", TextPlan(memory_plan="on", chunk_size=2))
    amp = build("MaPLe", TextPlan(memory_plan="on", chunk_size=2))
    loss32, _, grads32 = loss_and_grads(fp32, image, label)
    with torch.autocast("cpu", dtype=prec_dtype):
        loss16, _, grads16 = loss_and_grads(amp, image, label)
    assert torch.isfinite(loss16) and loss16.item() == pytest.approx(loss32.item(), rel=5e-2)
    for name, grad in grads32.items():
        assert torch.isfinite(grads16[name]).all() and rel(grads16[name], grad) <= 0.2, name


def test_sequence_length_covers_eot_and_deep_prompts():
    model = build("MaPLe")
    encoder = model.text_encoder
    tok = tokenize(["a b", "a b c d e f"])
    assert encoder.sequence_length(tok) == int(tok.argmax(-1).max()) + 1 == 8
    assert encoder.sequence_length(tok, [torch.zeros(9, encoder.width)]) == 10
    emb = torch.zeros(2, 77, encoder.width)
    with pytest.raises(ValueError, match="length=5: expected max EOT index"):
        encoder(emb, tok, length=5)
