"""TCP against the official arithmetic, re-expressed here independently (fp32, deterministic small CLIPs).

Reference (the official ``trainers/tcp.py`` and its CLIP fork, written out by hand): targets
``w^clip = normalize(encode_text("<template>"))``; TKE ``h = W_1 w^clip + b_1``, ``h * sigmoid(1.702 h)``,
``W_2 h + b_2`` reshaped ``[C, M, Dt]``; the sentence ``"X X X X <class words>"`` embedded with the
context at positions 1..M; CLIP's blocks one by one on all 77 positions, and before the block whose
0-based counter is ``K - 1`` (official ``layers=[8]``, K = 9) positions 1..M become
``1.0 * TKE + (1 - 1.0) * x``; ``ln_final``, EOT token, projection; logits
``exp(s) * f^ @ w^.T``; loss ``CE + 8 * (1 - mean cos(w^, w^clip))`` (cosine eps 1e-7).
"""
import os

import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from engine.backbone._clip import CLIP
from engine.backbone.prompted_text import default_text_plan
from engine.backbone.text_plan import TextPlan
from engine.config import get_cfg_default, merge_from_file, merge_from_list
from repro.methods import get_method
from repro.plan import Context, build_plan
from tests.fixtures_data import make_shapes
from trainers.config import extend_cfg
from trainers.tcp import DEFAULT_SENTENCE, TCP_SENTENCES, TCP_TARGET_TEMPLATES, TCPCLIP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSNAMES = ["golden_retriever", "cat", "sea lion", "a very long breed name of a dog"]

#: the official CUSTOM_TEMPLATES_ori (targets) and CUSTOM_TEMPLATES (sentences), typed from the official file
OFFICIAL_TARGETS = {
    "OxfordPets": "a photo of a {}, a type of pet.", "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of an aircraft {}.", "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.", "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of a {}, a type of food.", "SUN397": "a photo of a {}.", "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.", "ImageNet": "a photo of a {}.", "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.", "ImageNetA": "a photo of a {}.", "ImageNetR": "a photo of a {}.",
}
OFFICIAL_SENTENCES = {
    "OxfordPets": "X X X X {}, a type of pet.", "OxfordFlowers": "X X X X {}, a type of flower.",
    "FGVCAircraft": "X X X X {}, a type of aircraft.", "DescribableTextures": "X X X X {} texture.",
    "EuroSAT": "X X X X {}.", "StanfordCars": "X X X X {}, a type of car", "Food101": "X X X X {}, a type of food.",
    "SUN397": "X X X X {}.", "Caltech101": "X X X X {}.", "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.", "ImageNetSketch": "a photo of a {}.", "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.", "ImageNetR": "a photo of a {}.",
}


@pytest.fixture(scope="module")
def tiny():
    return build_random_clip("ViT-Tiny/16", seed=0).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def clip12():
    """A small fp32 CLIP with ViT-B/16's 12 text blocks, so the official block (counter 8) exists."""
    torch.manual_seed(5)
    return CLIP(embed_dim=32, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                transformer_layers=12).float().eval().requires_grad_(False)


def build(clip_model, dataset="OxfordPets", depth=9, plan=TextPlan(), **kw):
    torch.manual_seed(0)
    with default_text_plan(plan):
        model = TCPCLIP(clip_model, CLASSNAMES, TCP_TARGET_TEMPLATES[dataset],
                        TCP_SENTENCES.get(dataset, DEFAULT_SENTENCE), depth=depth, **kw)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("prompt_learner."))
    return model.train()


def official(clip_model, params, images, labels, dataset, depth, weight=8.0):
    """The official TCP forward and loss (see the module docstring), from the learned tensors ``params``."""
    names = [c.replace("_", " ") for c in CLASSNAMES]
    old = clip_model.encode_text(tokenize([OFFICIAL_TARGETS[dataset].format(c) for c in names]))
    old = old / old.norm(dim=-1, keepdim=True)
    h = old @ params["meta_net.linear1.weight"].t() + params["meta_net.linear1.bias"]
    h = h * torch.sigmoid(1.702 * h)
    class_feature = (h @ params["meta_net.linear2.weight"].t() + params["meta_net.linear2.bias"])
    class_feature = class_feature.reshape(len(names), -1, clip_model.ln_final.weight.shape[0])
    tok = tokenize([OFFICIAL_SENTENCES[dataset].format(c) for c in names])
    emb = clip_model.token_embedding(tok)
    ctx = params["ctx"]
    n_ctx = ctx.shape[0]
    prompts = torch.cat([emb[:, :1], ctx.unsqueeze(0).expand(len(names), -1, -1), emb[:, 1 + n_ctx:]], dim=1)
    x = (prompts + clip_model.positional_embedding).permute(1, 0, 2)
    for counter, block in enumerate(clip_model.transformer.resblocks):
        if counter == depth - 1:
            textual_context = class_feature.permute(1, 0, 2)
            n = textual_context.shape[0]
            w = 1.0
            x = torch.cat([x[:1], w * textual_context + (1 - w) * x[1:1 + n], x[1 + n:]], dim=0)
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    text = x[torch.arange(x.shape[0]), tok.argmax(dim=-1)] @ clip_model.text_projection
    image = clip_model.encode_image(images)
    image = image / image.norm(dim=-1, keepdim=True)
    old = old / old.norm(dim=-1, keepdim=True)
    text_norm = text / text.norm(dim=-1, keepdim=True)
    logits = clip_model.logit_scale.exp() * image @ text_norm.t()
    score = 1.0 - torch.mean(torch.nn.CosineSimilarity(dim=1, eps=1e-07)(text_norm, old))
    return logits, F.cross_entropy(logits, labels) + weight * score, score


def _batch(clip_model, seed=3):
    res = clip_model.visual.input_resolution
    return torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(seed)), torch.tensor([0, 3, 1, 0])


def _close(a, b, tol):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item() <= tol


@pytest.mark.parametrize("which, depth, dataset, truncate", [
    ("clip12", 9, "OxfordPets", False), ("clip12", 9, "OxfordPets", True), ("clip12", 2, "UCF101", True),
    ("clip12", 12, "ImageNet", True), ("tiny", 3, "Caltech101", False), ("tiny", 2, "StanfordCars", True)])
def test_logits_loss_and_gradients_equal_the_official_arithmetic(request, which, depth, dataset, truncate):
    clip_model = request.getfixturevalue(which)
    model = build(clip_model, dataset, depth, plan=TextPlan(truncate=truncate, memory_plan="off"))
    images, labels = _batch(clip_model)
    learned = dict(model.prompt_learner.named_parameters())
    assert sorted(learned) == ["ctx", "meta_net.linear1.bias", "meta_net.linear1.weight",
                               "meta_net.linear2.bias", "meta_net.linear2.weight"]
    params = {k: v.detach().clone().requires_grad_() for k, v in learned.items()}
    ref_logits, ref_loss, ref_score = official(clip_model, params, images, labels, dataset, depth)
    ref_loss.backward()

    loss, summary = model.compute_loss(images, labels)
    loss.backward()
    tol = 1e-6 if not truncate else 1e-5  # truncation: the same sums over fewer (masked) positions
    assert ref_score.item() > 1e-3  # the class-aware prompt is far from the template: the term matters
    assert loss.item() == pytest.approx(ref_loss.item(), rel=tol)
    assert summary["loss_kg"] == pytest.approx(ref_score.item(), rel=tol)
    assert _close(model(images).detach(), ref_logits.detach(), tol)
    for name, p in learned.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert _close(p.grad, params[name].grad, 10 * tol), name
    with torch.no_grad():  # evaluation: the cached class features give the same logits
        model.eval()
        model.cache_text_features()
        assert _close(model(images), ref_logits.detach(), tol)
        model.clear_text_cache()


def test_class_aware_tokens_enter_before_block_k_only(clip12):
    """Moving TKE's output changes the outputs of blocks K.. only: blocks 1..K-1 see no class-aware token."""
    model = build(clip12, depth=9).eval()

    def block_outputs():
        learner = model.prompt_learner
        deep = [None] * 7 + [learner.class_prompts()]
        return model.text_encoder(learner()[0], learner.tokenized_prompts, deep, return_hidden=12, length=77)[1]

    with torch.no_grad():
        before = block_outputs()
        model.prompt_learner.meta_net.linear2.bias.add_(0.5)
        after = block_outputs()
    assert all(torch.equal(a, b) for a, b in zip(before[:8], after[:8]))  # blocks 1..8
    assert all((a - b).abs().max() > 1e-3 for a, b in zip(before[8:], after[8:]))  # blocks 9..12


def test_sentences_tokenise_as_the_official_templates(tiny):
    """Our "[4 x X] <words>" sentences have the official tokens after the 4 context positions, per dataset."""
    names = [c.replace("_", " ") for c in CLASSNAMES]
    for dataset, official_template in OFFICIAL_SENTENCES.items():
        ours = tokenize([f"X X X X {TCP_SENTENCES.get(dataset, DEFAULT_SENTENCE).format(c)}" for c in names])
        theirs = tokenize([official_template.format(c) for c in names])
        assert torch.equal(ours[:, 5:], theirs[:, 5:]), dataset
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1)), dataset
    for dataset, template in OFFICIAL_TARGETS.items():
        assert TCP_TARGET_TEMPLATES[dataset] == template, dataset


def test_learned_tensors_and_checkpoint_keys(tiny):
    model = build(tiny, depth=3)
    state = model.prompt_learner.state_dict()
    # what a checkpoint holds after the class-dependent buffers are dropped (official keys)
    assert sorted(k for k in state if k not in ("token_prefix", "token_suffix")) == [
        "ctx", "meta_net.linear1.bias", "meta_net.linear1.weight", "meta_net.linear2.bias", "meta_net.linear2.weight"]
    e, dt = tiny.visual.output_dim, 64
    assert tuple(state["meta_net.linear1.weight"].shape) == (e // 4, e)
    assert tuple(state["meta_net.linear2.weight"].shape) == (4 * dt, e // 4)
    assert tuple(state["ctx"].shape) == (4, dt)
    with pytest.raises(ValueError, match=r"TRAINER.TCP.CLASS_PROMPT_DEPTH must be in 2..3"):
        build(tiny, depth=9)


def test_fp16_backbone_learns_fp16_tensors_as_upstream(tiny):
    """fp16 CLIP: ctx and TKE are fp16 (upstream builds ctx in CLIP's dtype and halves TKE); with
    UPSTREAM_NUMERICS the logits and the loss are in fp16 too, and an Adam step (eps 1e-3) stays finite."""
    from trainers.base import cast_clip

    clip16 = cast_clip(build_random_clip("ViT-Tiny/16", seed=0), torch.float16).eval()
    for upstream in (False, True):
        model = build(clip16, "Caltech101", depth=3, upstream_numerics=upstream)
        assert {p.dtype for p in model.prompt_learner.parameters()} == {torch.float16}
    assert model.prompt_learner.class_text_features.dtype == torch.float16  # targets in the backbone dtype
    images, labels = _batch(clip16)
    loss, _ = model.compute_loss(images.half(), labels)
    assert loss.dtype == torch.float16 and torch.isfinite(loss)
    loss.backward()
    params = list(model.prompt_learner.parameters())
    before = [p.detach().clone() for p in params]
    torch.optim.Adam(params, lr=0.002, eps=1e-3).step()
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(params, before))
    assert {p.dtype for p in build(tiny, depth=3).prompt_learner.parameters()} == {torch.float32}


def test_ctx_init_words(tiny):
    model = build(tiny, depth=3, ctx_init="a photo of a")
    emb = tiny.token_embedding(tokenize(["a photo of a"]))[0, 1:5]
    torch.testing.assert_close(model.prompt_learner.ctx.detach(), emb.detach())


def test_official_yaml_and_command_line_load_unchanged():
    cfg = extend_cfg(get_cfg_default())
    merge_from_file(cfg, os.path.join(REPO, "configs/trainers/TCP/vit_b16_ep100_ctxv1.yaml"))
    # the official base2new_train.sh options (TRAINER.COOP.W needs TCP's extra_config)
    merge_from_list(cfg, ["TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.W", "1.0",
                          "TRAINER.COOP.CLASS_TOKEN_POSITION", "end", "DATASET.NUM_SHOTS", "16"])
    got = (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
    assert got == ("adam", 0.002, 50, 32)
    assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_TYPE, cfg.OPTIM.WARMUP_CONS_LR) == (1, "constant", 1e-5)
    node = cfg.TRAINER.TCP
    assert (node.N_CTX, node.CTX_INIT, node.W, node.CLASS_PROMPT_DEPTH, node.ADAM_EPS, node.PREC) == \
        (4, "", 8.0, 9, 1e-3, "fp16")
    # the ImageNet/SUN397 file is the official one with 25 epochs
    ep100, ep25 = (merge_from_file(extend_cfg(get_cfg_default()), os.path.join(REPO, "configs/trainers/TCP", name))
                   for name in ("vit_b16_ep100_ctxv1.yaml", "vit_b16_ep25_ctxv1.yaml"))
    assert ep25.OPTIM.MAX_EPOCH == 25
    ep25.OPTIM.MAX_EPOCH = 50
    assert ep25 == ep100


def test_sweep_plans_tcp_with_the_official_epochs(tmp_path):
    spec = get_method("tcp")
    assert (spec.trainer, spec.node, spec.prec, spec.checkpoint) == ("TCP", "TCP", "fp16", "prompt_learner")
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"), opts=[])
    jobs = build_plan(ctx, ["base2new"], ["TCP"], ["dtd", "imagenet", "sun397"], [1])
    tests = {j.id.split("/")[2]: j for j in jobs if j.kind == "base2new_test"}
    assert {d: (j.id.split("/")[5], j.load_epoch) for d, j in tests.items()} == {
        "dtd": ("vit_b16_ep100_ctxv1", 50), "imagenet": ("vit_b16_ep25_ctxv1", 25),
        "sun397": ("vit_b16_ep25_ctxv1", 25)}


@pytest.mark.slow
def test_base2new_train_and_test_through_the_job_runner(tmp_path, monkeypatch):
    """``scripts/tcp/base2new_{train,test}.sh`` run ``python -m repro.job``: the same, in process."""
    from repro import job

    data = tmp_path / "data"
    make_shapes(data, classes=("circle", "square", "triangle", "star"), counts={"train": 6, "val": 2, "test": 3},
                size=32)
    monkeypatch.setenv("DATA", str(data))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.chdir(REPO)
    opts = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAINER.TCP.CLASS_PROMPT_DEPTH", "3"]
    assert job.main(["tcp", "base2new_train", "shapes", "1", *opts]) == 0
    assert job.main(["tcp", "base2new_test", "shapes", "1", *opts]) == 0
    run = "shots_4/TCP/vit_b16_ep100_ctxv1/seed1"
    train_dir = tmp_path / "out/base2new/train_base/shapes" / run
    test_dir = tmp_path / "out/base2new/test_new/shapes" / run
    train_log = (train_dir / "log.txt").read_text()
    # ctx 4 x 64 + TKE (96 -> 24 -> 4 x 64): 256 + (96 * 24 + 24) + (24 * 256 + 256)
    assert "loss_kg" in train_log and "Trainable parameters: 8,984" in train_log
    assert "Adam eps = 0.001 (TRAINER.TCP.ADAM_EPS" in train_log
    assert (train_dir / "prompt_learner" / "model.pth.tar-1").is_file()
    assert "=> result" in (test_dir / "log.txt").read_text()
