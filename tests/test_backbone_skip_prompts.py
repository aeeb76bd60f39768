"""Deep text prompts that skip blocks (``None`` entries) and prompts at chosen blocks only
(``deep_prompts_at``): placement against an independent block-by-block reference, exact equality
with fewer prompts, gradients, and the truncated / chunked / checkpointed text paths."""
import pytest
import torch

from engine.backbone import PromptedTextEncoder, build_random_clip, deep_prompts_at, tokenize
from engine.backbone.text_plan import TextPlan

CLASSNAMES = ["circle", "red square", "a very long name of a triangle", "star", "ox"]


@pytest.fixture(scope="module")
def tiny():
    return build_random_clip("ViT-Tiny/16", seed=0)


def _inputs(model):
    tok = tokenize([f"a photo of a {c}." for c in CLASSNAMES])
    return model.token_embedding(tok).detach(), tok


def _prompt(n_tok, width, seed, lead=()):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, n_tok, width, generator=g)


def _reference(model, emb, tok, deep):
    """CLIP's blocks one by one; before block i+2 (1-based) positions 1..n take ``deep[i]`` unless None."""
    x = (emb + model.positional_embedding).permute(1, 0, 2)
    for i, blk in enumerate(model.transformer.resblocks):
        if 1 <= i <= len(deep) and deep[i - 1] is not None:
            p = deep[i - 1]
            x = x.clone()
            x[1:1 + p.shape[-2]] = p.unsqueeze(1) if p.dim() == 2 else p.transpose(0, 1)
        x = blk(x)
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), tok.argmax(-1)] @ model.text_projection


def test_deep_prompts_at_builds_the_list():
    p, q = torch.zeros(2, 4), torch.ones(3, 4)
    assert deep_prompts_at({}, 12) == []
    deep = deep_prompts_at({9: p}, 12)
    assert len(deep) == 8 and deep[:7] == [None] * 7 and deep[7] is p  # before block 9 = 0-based block 8
    deep = deep_prompts_at({3: q, 2: p}, 3)
    assert deep[0] is p and deep[1] is q
    for bad in (1, 13, "9"):
        with pytest.raises(ValueError, match=r"expected blocks 2\.\.12"):
            deep_prompts_at({bad: p}, 12)


@torch.no_grad()
def test_none_entries_leave_blocks_unchanged(tiny):
    emb, tok = _inputs(tiny)
    text = PromptedTextEncoder(tiny)
    plain = text(emb, tok)
    assert torch.equal(text(emb, tok, [None, None]), plain)  # nothing inserted = no prompts, bit for bit
    assert torch.equal(text(emb, tok, [None]), plain)
    shared = _prompt(3, text.width, seed=1)
    per_class = _prompt(4, text.width, seed=2, lead=(len(CLASSNAMES),))
    for deep in ([None, shared], [shared, None], [None, per_class], [per_class, None], [shared, per_class]):
        out = text(emb, tok, deep)
        assert (out - _reference(tiny, emb, tok, deep)).abs().max() <= 1e-5
        assert (out - plain).abs().max() > 1e-4  # the inserted prompt had an effect
    # [P, None] = [P]: a trailing None changes nothing, bit for bit
    assert torch.equal(text(emb, tok, [shared, None]), text(emb, tok, [shared]))
    # deep_prompts_at({3: P}) = [None, P]
    assert torch.equal(text(emb, tok, deep_prompts_at({3: per_class}, text.layers)), text(emb, tok, [None, per_class]))


def test_gradients_reach_only_the_inserted_prompt(tiny):
    emb, tok = _inputs(tiny)
    text = PromptedTextEncoder(tiny)
    p = _prompt(4, text.width, seed=3, lead=(len(CLASSNAMES),)).requires_grad_()
    text(emb, tok, [None, p]).sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_sequence_length_ignores_none(tiny):
    text = PromptedTextEncoder(tiny)
    tok = tokenize(["a b", "a b c d e f"])
    assert text.sequence_length(tok, [None, None]) == 8
    assert text.sequence_length(tok, [None, torch.zeros(9, text.width)]) == 10


def _loss_and_grad(tiny, plan, deep_fn, seed=4):
    emb, tok = _inputs(tiny)
    text = PromptedTextEncoder(tiny, plan=plan)
    p = _prompt(4, text.width, seed=seed, lead=(len(CLASSNAMES),)).requires_grad_()
    q = _prompt(2, text.width, seed=seed + 1).requires_grad_()
    feats = text(emb, tok, deep_fn(p, q))
    loss = (feats ** 2).sum() / feats.numel()
    loss.backward()
    grads = [x.grad.clone() if x.grad is not None else torch.zeros_like(x) for x in (p, q)]
    return loss.detach(), grads[0], grads[1], text.last_shape


@pytest.mark.parametrize("deep_fn", [lambda p, q: [None, p], lambda p, q: [p, None], lambda p, q: [q, p]])
def test_truncation_and_memory_plan_with_skipped_blocks(tiny, deep_fn):
    """Exact truncation and chunked/checkpointed passes give the full 77-position numbers with None entries."""
    full = _loss_and_grad(tiny, TextPlan(truncate=False, memory_plan="off"), deep_fn)
    short = _loss_and_grad(tiny, TextPlan(truncate=True, memory_plan="off"), deep_fn)
    one_chunk = _loss_and_grad(tiny, TextPlan(truncate=True, memory_plan="on", chunk_size=100), deep_fn)
    chunked = _loss_and_grad(tiny, TextPlan(truncate=True, memory_plan="on", chunk_size=2), deep_fn)
    assert full[3] == (5, 77) and short[3][1] < 77
    for other, tol in ((short, 1e-5), (one_chunk, 1e-5), (chunked, 1e-5)):
        assert other[0].item() == pytest.approx(full[0].item(), rel=tol)
        for got, want in zip(other[1:3], full[1:3]):
            if want.abs().sum() == 0:  # [p, None] with q unused: no gradient at all
                assert got.abs().sum() == 0
            else:
                assert ((got - want).norm() / want.norm()).item() <= tol
    # checkpointing alone changes nothing, bit for bit
    assert torch.equal(one_chunk[0], short[0]) and torch.equal(one_chunk[1], short[1])
