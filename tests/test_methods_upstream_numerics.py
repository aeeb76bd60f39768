"""``TRAINER.<NODE>.UPSTREAM_NUMERICS``: the official fp16 arithmetic, checked on CPU.

These tests cast the tiny CLIP to fp16 themselves (or build a trainer with ``PREC fp16``, which runs
fp16 on a CPU as on CUDA) and check: which learned tensors are fp16 (MaPLe/CoMMA ``ctx``, ``proj``,
CoMMA's first generator, IVLP's shallow text context, CoOp/CoCoOp context) and which stay fp32,
the optimiser state's dtype, one SGD step on fp16 parameters equal to a hand computation rounded to
fp16 after every operation (and a small update rounded away, as upstream), logits and loss in the
backbone dtype, VPT's fp32 backbone, and that the key changes nothing when it is off.
"""
import pytest
import torch

from engine.backbone import build_random_clip
from engine.config import get_cfg_default
from engine.optim import build_optimizer
from engine.precision import Precision, learned_dtype
from trainers.base import cast_clip
from trainers.config import extend_cfg

CLASSNAMES = ["cat", "sea_lion", "fire truck"]
NODES = ("COOP", "COCOOP", "MAPLE", "COMMA", "IVLP", "VPT", "ZSCLIP")


def make_cfg(upstream=True):
    cfg = extend_cfg(get_cfg_default())
    cfg.MODEL.BACKBONE.NAME = "ViT-Tiny/16"
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATASET.NAME = "Shapes"
    for node in ("MAPLE", "COMMA"):
        cfg.TRAINER[node].PROMPT_DEPTH = 3
    for node in NODES:
        cfg.TRAINER[node].UPSTREAM_NUMERICS = upstream
    return cfg


@pytest.fixture(scope="module")
def clip16():
    return cast_clip(build_random_clip("ViT-Tiny/16", seed=0), torch.float16)


@pytest.fixture(scope="module")
def clip32():
    return build_random_clip("ViT-Tiny/16", seed=0)


def build(method, clip_model, upstream=True):
    from trainers.cocoop import CoCoOpCLIP
    from trainers.comma import CoMMACLIP
    from trainers.coop import CoOpCLIP
    from trainers.ivlp import IVLPCLIP
    from trainers.maple import MultiModalCLIP, MultiModalPromptLearner

    torch.manual_seed(0)
    cfg = make_cfg(upstream)
    if method == "MaPLe":
        model = MultiModalCLIP(clip_model, CLASSNAMES, MultiModalPromptLearner(cfg, clip_model, CLASSNAMES))
    elif method == "CoMMA":
        model = CoMMACLIP(cfg, clip_model, CLASSNAMES)
    elif method == "IVLP":
        model = IVLPCLIP(clip_model, CLASSNAMES, depth_text=3, depth_vision=3, upstream_numerics=upstream)
    elif method == "CoOp":
        model = CoOpCLIP(clip_model, CLASSNAMES, n_ctx=4)
    else:
        model = CoCoOpCLIP(clip_model, CLASSNAMES, n_ctx=4)
    model.upstream_numerics = upstream
    return model


def sgd_cfg(lr=0.0035):
    """The official MaPLe/CoMMA optimiser: SGD, momentum 0.9, weight decay 5e-4."""
    cfg = make_cfg().OPTIM
    cfg.NAME, cfg.LR, cfg.MOMENTUM, cfg.WEIGHT_DECAY = "sgd", lr, 0.9, 5e-4
    return cfg


def low_precision(model):
    return sorted(n for n, p in model.prompt_learner.named_parameters() if p.dtype != torch.float32)


GEN = ("fc.weight", "fc.bias", "ln.weight", "ln.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
FP16_UPSTREAM = {
    "MaPLe": ["ctx", "proj.bias", "proj.weight"],
    "CoMMA": sorted(["ctx", "proj.bias", "proj.weight"] + [f"compound_prompt_projections_image_base.{k}" for k in GEN]),
    "IVLP": ["ctx"],
    "CoOp": ["ctx"],
    "CoCoOp": sorted(["ctx", "meta_net.linear1.bias", "meta_net.linear1.weight",
                      "meta_net.linear2.bias", "meta_net.linear2.weight"]),
}


def test_every_node_has_the_key_default_false():
    cfg = extend_cfg(get_cfg_default())
    for node in NODES:
        assert cfg.TRAINER[node].UPSTREAM_NUMERICS is False


def test_learned_dtype_rule():
    assert learned_dtype(torch.float16, True) == torch.float16
    for backbone, upstream in [(torch.float16, False), (torch.float32, True), (torch.bfloat16, True)]:
        assert learned_dtype(backbone, upstream) == torch.float32


@pytest.mark.parametrize("method", sorted(FP16_UPSTREAM))
def test_fp16_learned_tensors_exactly_where_upstream_has_them(method, clip16, clip32):
    assert low_precision(build(method, clip16, upstream=True)) == FP16_UPSTREAM[method]
    if method in ("CoOp", "CoCoOp"):  # upstream's fp16 context is our default too
        assert low_precision(build(method, clip16, upstream=False)) == FP16_UPSTREAM[method]
    else:
        assert low_precision(build(method, clip16, upstream=False)) == []
    assert low_precision(build(method, clip32, upstream=True)) == []  # an fp32 backbone: nothing changes


def test_optimizer_state_follows_parameter_dtype(clip16):
    model = build("CoMMA", clip16)
    params = dict((n, p) for n, p in model.prompt_learner.named_parameters() if p.requires_grad)
    optim = build_optimizer(list(params.values()), sgd_cfg())
    for p in params.values():
        p.grad = torch.full_like(p, 1e-2)
    optim.step()
    for name, p in params.items():
        buf = optim.state[p]["momentum_buffer"]
        assert buf.dtype == p.dtype, name
    assert params["ctx"].dtype == torch.float16 and params["compound_prompts_text"].dtype == torch.float32


def _h(x):
    """Round to fp16 and back (one fp16 operation's result)."""
    return x.half().float()


def test_one_fp16_sgd_step_equals_hand_computation():
    cfg = sgd_cfg()
    g = torch.Generator().manual_seed(0)
    p0 = (torch.randn(64, generator=g) * 0.02).half()
    grads = [(torch.randn(64, generator=g) * 1e-2).half() for _ in range(2)]
    param = torch.nn.Parameter(p0.clone())
    optim = build_optimizer([param], cfg)
    lr, mom, wd = cfg.LR, cfg.MOMENTUM, cfg.WEIGHT_DECAY
    p, buf = p0.float(), None
    for grad in grads:
        param.grad = grad.clone()
        optim.step()
        d = _h(grad.float() + wd * p)  # grad.add(param, alpha=wd)
        buf = d if buf is None else _h(_h(buf * mom) + d)  # buf.mul_(momentum).add_(d)
        p = _h(p - lr * buf)  # param.add_(buf, alpha=-lr)
        assert param.dtype == torch.float16 and optim.state[param]["momentum_buffer"].dtype == torch.float16
        assert torch.equal(param.detach().float(), p)
        assert torch.equal(optim.state[param]["momentum_buffer"].float(), buf)


def test_small_fp16_update_is_rounded_away_as_upstream():
    """An lr * grad below half an fp16 ulp leaves an fp16 parameter unchanged (an fp32 one moves)."""
    cfg = sgd_cfg()
    for dtype, changed in [(torch.float16, False), (torch.float32, True)]:
        param = torch.nn.Parameter(torch.ones(8, dtype=dtype))
        optim = build_optimizer([param], cfg)
        param.grad = torch.full_like(param, 1e-4)
        optim.step()
        assert bool((param.detach() != 1).all()) is changed


def test_logits_and_loss_in_backbone_dtype(clip16):
    model = build("MaPLe", clip16)
    g = torch.Generator().manual_seed(1)
    img = torch.randn(4, 16, generator=g).half()
    txt = torch.randn(3, 16, generator=g).half()
    logits = model.logits_from(img, txt)
    scale = model.logit_scale.exp()
    expected = (scale * (img / img.norm(dim=-1, keepdim=True))) @ (txt / txt.norm(dim=-1, keepdim=True)).t()
    assert logits.dtype == torch.float16 and torch.equal(logits, expected)
    model.upstream_numerics = False
    assert model.logits_from(img, txt).dtype == torch.float32

    model.upstream_numerics = True
    image, label = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([0, 2])
    loss, _ = model.compute_loss(image, label)
    assert loss.dtype == torch.float16
    loss.backward()
    pl = model.prompt_learner
    assert pl.ctx.grad.dtype == torch.float16 and pl.proj.weight.grad.dtype == torch.float16
    assert pl.compound_prompts_text[0].grad.dtype == torch.float32


def test_comma_and_cocoop_forward_in_backbone_dtype(clip16):
    image = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    comma = build("CoMMA", clip16)
    loss, summary = comma.compute_loss(image, torch.tensor([1, 0]))
    assert loss.dtype == torch.float16 and summary["loss_kd"] >= 0
    cocoop = build("CoCoOp", clip16)
    logits16 = cocoop(image)
    cocoop.upstream_numerics = False
    logits32 = cocoop(image)
    assert logits16.dtype == torch.float16 and logits32.dtype == torch.float32
    assert torch.allclose(logits16.float(), logits32, atol=0.5)


def test_vpt_runs_fp32_backbone_under_upstream_numerics():
    from engine.trainer import TRAINER_REGISTRY

    vpt = TRAINER_REGISTRY.get("VPT")
    cfg = make_cfg(upstream=True)
    assert cfg.TRAINER.VPT.PREC == "fp16" and vpt.prec_name(cfg) == "fp32"
    cfg.TRAINER.VPT.PREC = "amp"
    assert vpt.prec_name(cfg) == "amp"
    assert vpt.prec_name(make_cfg(upstream=False)) == "fp16"


def test_zero_shot_text_features_official_arithmetic(clip16):
    from engine.backbone import PromptedTextEncoder
    from trainers.prompts import embed_texts
    from trainers.zsclip import template_text_features

    encoder = PromptedTextEncoder(clip16)
    one = template_text_features(clip16, encoder, CLASSNAMES, ["a photo of a {}."], upstream_numerics=True)
    tokenized, embedding = embed_texts(clip16, [f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES])
    raw = encoder(embedding, tokenized)
    assert one.dtype == torch.float16 and torch.equal(one, raw / raw.norm(dim=-1, keepdim=True))
    default = template_text_features(clip16, encoder, CLASSNAMES, ["a photo of a {}."])
    assert default.dtype == torch.float32 and torch.allclose(default, one.float(), atol=2e-3)
    two = template_text_features(clip16, encoder, CLASSNAMES, ["a photo of a {}.", "a {}."], upstream_numerics=True)
    assert two.dtype == torch.float16 and torch.allclose(two.float().norm(dim=-1), torch.ones(3), atol=2e-3)


def test_trainer_builds_fp16_learned_tensors_and_logs(tmp_path, capsys):
    """A MaPLe trainer with ``PREC fp16`` on the CPU: fp16 CLIP, fp16 ctx/proj in the optimiser."""
    from engine.trainer import build_trainer
    from tests.fixtures_data import make_eurosat

    root = tmp_path / "data"
    make_eurosat(str(root), n=4)
    cfg = make_cfg(upstream=True)
    cfg.DATASET.NAME = "EuroSAT"
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.ALLOW_GENERATED_SPLIT = True
    cfg.TRAINER.NAME = "MaPLe"
    cfg.MODEL.BACKBONE.RANDOM_INIT = True
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.USE_CUDA = False
    cfg.INPUT.TRANSFORMS = ("normalize",)
    trainer = build_trainer(cfg)
    assert trainer.device.type == "cpu" and trainer.precision == Precision("fp16", torch.float16, None, False)
    dtypes = {id(p): p.dtype for group in trainer.optim.param_groups for p in group["params"]}
    pl = trainer.model.prompt_learner
    assert dtypes[id(pl.ctx)] == torch.float16 and dtypes[id(pl.proj.weight)] == torch.float16
    assert dtypes[id(pl.compound_prompts_text[0])] == torch.float32
    out = capsys.readouterr().out
    assert "TRAINER.MAPLE.UPSTREAM_NUMERICS" in out
    assert "Learned without an fp32 master copy (as upstream): prompt_learner.ctx (float16)" in out


# ------------------------------------------------------------- the official fp16 arithmetic, end to end
#: the official MaPLe/CoMMA optimiser (Dassl's SGD: momentum 0.9, weight decay 5e-4, no dampening)
OFFICIAL_SGD = ["OPTIM.LR", "0.0035", "OPTIM.MOMENTUM", "0.9", "OPTIM.WEIGHT_DECAY", "5e-4"]


def official_sgd_step(p, grad, buf, lr, mom=0.9, wd=5e-4, half_scalars=False):
    """One step of torch's SGD on a parameter of ``p.dtype`` as the official code runs it (fp16: every
    operation's result rounded to fp16, no fp32 master copy; fp32: plain fp32). Returns ``(p, buf)``
    as fp32 tensors holding the parameter-dtype values.

    ``half_scalars``: the ``alpha`` scalars of the two ``add`` calls (``weight_decay``, ``lr``) rounded
    to fp16 first, as PyTorch's CPU kernels do for fp16 tensors (``mul_(momentum)`` keeps its scalar in
    fp32); CUDA kernels (the official runs) keep both in fp32.
    """
    half = p.dtype == torch.float16
    r = _h if half else (lambda x: x)
    if half and half_scalars:
        lr, wd = _h(torch.tensor(lr)).item(), _h(torch.tensor(wd)).item()
    p, g = p.float(), grad.float()
    d = r(g + wd * p)  # grad.add(param, alpha=wd): one rounding
    buf = d if buf is None else r(r(buf * mom) + d)  # buf.mul_(momentum).add_(d): two roundings
    return r(p - lr * buf), buf  # param.add_(buf, alpha=-lr): one rounding


def within_fp16_rounding(a, b, extra=0.0):
    """``|a - b| <= 2**-10 |b| + 2**-24 + extra`` elementwise: one fp16 rounding (relative spacing
    2**-10 of normal numbers, 2**-24 of subnormals) plus ``extra``."""
    return bool(((a - b).abs() <= 2.0 ** -10 * b.abs() + 2.0 ** -24 + extra).all())


def _declared_learners():
    """Every declared method that learns something; CoMMA outside ``slow`` (a few seconds)."""
    from tests.fixtures_trainers import declared_trainers

    # TCP's official optimiser is Adam (eps 1e-3), so the official fp16 SGD is not its arithmetic
    names = sorted(name for name, (_, _, zero_shot) in declared_trainers().items() if not zero_shot and name != "TCP")
    return [pytest.param(name, marks=() if name == "CoMMA" else pytest.mark.slow) for name in names]


@pytest.mark.parametrize("name", _declared_learners())
def test_trainer_steps_are_the_official_fp16_sgd(name):
    """``PREC fp16`` + ``UPSTREAM_NUMERICS True`` on the CPU: two training steps of the real trainer
    update every fp16 learned tensor (parameter and momentum buffer) bit for bit as the fp16 SGD hand
    computation with this CPU's fp16 ``alpha`` scalars, and within one fp16 rounding of the official
    CUDA arithmetic (fp32 scalars) plus what the scalars' rounding moves (``|wd - fp16(wd)| |p|`` in
    the buffer, ``|lr - fp16(lr)| |buf|`` in the parameter); every fp32 tensor as fp32 SGD. No master
    copy, no scaler."""
    from tests.fixtures_trainers import build_tiny_trainer, declared_trainers, tiny_inputs

    node = declared_trainers()[name][0]
    trainer = build_tiny_trainer(name, "fp16", opts=[f"TRAINER.{node}.UPSTREAM_NUMERICS", "True", *OFFICIAL_SGD])
    expected_prec = "fp32" if name == "VPT" else "fp16"  # upstream's vpt.py runs CLIP in fp32
    assert trainer.precision.name == expected_prec and trainer.scaler is None
    params = dict(trainer.trainable_parameters())
    fp16 = sorted(n for n, p in params.items() if p.dtype == torch.float16)
    assert bool(fp16) == (name != "VPT"), fp16  # every fp16-backbone method learns some tensor in fp16
    assert all(p.dtype in (torch.float16, torch.float32) for p in params.values())
    bufs = dict.fromkeys(params)
    trainer.set_model_mode("train")
    for step in range(2):
        before = {n: p.detach().clone() for n, p in params.items()}
        lr = trainer.optim.param_groups[0]["lr"]
        images, labels = tiny_inputs(seed=step)
        trainer.forward_backward({"img": images, "label": labels})
        for n, p in params.items():
            got, got_buf = p.detach().float(), trainer.optim.state[p]["momentum_buffer"].float()
            assert trainer.optim.state[p]["momentum_buffer"].dtype == p.dtype
            if p.dtype == torch.float16:
                prev = bufs[n]
                want, bufs[n] = official_sgd_step(before[n], p.grad, prev, lr, half_scalars=True)
                assert torch.equal(got, want) and torch.equal(got_buf, bufs[n]), (name, n, step)
                # the official CUDA arithmetic, from the same parameters, gradients and buffer
                cuda, cuda_buf = official_sgd_step(before[n], p.grad, prev, lr)
                _, cuda_d = official_sgd_step(before[n], p.grad, None, lr)  # grad + wd * p
                d_wd, d_lr = (abs(v - _h(torch.tensor(v)).item()) for v in (5e-4, lr))
                # the buffer: d's rounding and its wd rounding carried over, then the buffer's own rounding
                buf_extra = d_wd * before[n].float().abs() + (2.0 ** -10 * cuda_d.abs() + 2.0 ** -24 if step else 0)
                buf_tol = 2.0 ** -10 * cuda_buf.abs() + 2.0 ** -24 + buf_extra
                assert within_fp16_rounding(got_buf, cuda_buf, buf_extra), (name, n, step)
                assert within_fp16_rounding(got, cuda, d_lr * got_buf.abs() + lr * buf_tol), (name, n, step)
            else:
                want, bufs[n] = official_sgd_step(before[n], p.grad, bufs[n], lr)
                assert torch.allclose(got, want, rtol=1e-6, atol=1e-9), (name, n, step)
    assert any(not torch.equal(params[n].detach(), before[n]) for n in params)


@pytest.mark.parametrize("layers", [1, 2])
def test_comma_kd_cosine_is_the_official_fp16_arithmetic(clip16, layers):
    """L_kd under ``UPSTREAM_NUMERICS`` with an fp16 CLIP equals the official expression evaluated in
    fp16: ``cos = CosineSimilarity(dim=-1, eps=1e-07)``; per layer ``1.0 - torch.mean(cos(h, t))``;
    ``sum(scores) / len(scores)`` -- bit for bit, for the official K = 1 and for K = 2."""
    from trainers.comma import CoMMACLIP

    torch.manual_seed(0)
    cfg = make_cfg(upstream=True)
    cfg.TRAINER.COMMA.LAST_LAYER = layers
    model = CoMMACLIP(cfg, clip16, CLASSNAMES)
    model.upstream_numerics = True
    with torch.no_grad():
        model.prompt_learner.ctx.add_(0.05 * torch.randn_like(model.prompt_learner.ctx))  # prompts != template
        _, hidden = model.encode_prompted_text(return_hidden=layers, length=model.kd_length())
        targets = model.kd_targets(hidden[0].shape[1])
        assert len(hidden) == len(targets) == layers
        assert all(h.dtype == t.dtype == torch.float16 for h, t in zip(hidden, targets))
        cos = torch.nn.CosineSimilarity(dim=-1, eps=1e-07)
        scores = [1.0 - torch.mean(cos(h, t)) for h, t in zip(hidden, targets)]
        official = sum(scores) / len(scores)
        ours = model.knowledge_loss(hidden)
    assert official.dtype == ours.dtype == torch.float16
    assert torch.equal(ours, official), (ours.item(), official.item())
    assert 0 < ours.item() < 1
