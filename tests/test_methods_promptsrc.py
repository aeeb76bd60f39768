"""PromptSRC on the tiny random CLIP ("ViT-Tiny/16", 32x32 images) and a tiny Shapes dataset.

Proves: the config node and YAMLs carry the official keys and values; the teacher text features are
the template-ensemble mean of frozen CLIP's ``encode_text`` (independent of our encoders); every loss
term (L1 text, L1 image, KL with sum / (B*C), CE) and their weighted total equal a hand computation,
and all vanish when the prompted model is the frozen one; the Gaussian weights of GPA equal the
closed form; over 3 epochs the final checkpoint (and the model evaluated at the end) holds
``sum_e w_e P_e`` of the per-epoch prompts, an intermediate checkpoint holds the raw prompts plus the
running sum, and ``--resume`` from it reproduces the uninterrupted result; an official checkpoint
(prompts inside CLIP blocks, a frozen image-encoder copy) loads; ``train.py`` trains on the base
classes and evaluates the novel ones with ``--load-epoch``; the sweep plans PromptSRC's protocols.
"""
import logging
import math
import os
import re
import shutil
from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from engine.checkpoint import load_checkpoint
from tests.fixtures_data import make_shapes
from trainers.promptsrc import (IMAGENET_TEMPLATES, METHOD, PromptSRCCLIP, gaussian_weights,
                                self_regulating_terms)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSNAMES = ["golden_retriever", "cat", "sea lion", "hot air balloon"]
TINY = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0"]
TINY_PROMPTS = ["TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT", "3", "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION", "3",
                "TRAINER.PROMPTSRC.N_CTX_TEXT", "2", "TRAINER.PROMPTSRC.N_CTX_VISION", "2"]
B2N_CFG = os.path.join("configs", "trainers", "PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx.yaml")


@pytest.fixture(scope="module")
def clip_model():
    return build_random_clip("ViT-Tiny/16", seed=0).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, classes=("circle", "square", "triangle", "star"), counts={"train": 4, "val": 2, "test": 3},
                size=32)
    return str(root)


def promptsrc(clip_model, depth_text=3, depth_vision=3, **kw):
    torch.manual_seed(0)
    return PromptSRCCLIP(clip_model, CLASSNAMES, n_ctx_text=2, n_ctx_vision=2, ctx_init="a photo of a",
                         depth_text=depth_text, depth_vision=depth_vision, **kw)


# ------------------------------------------------------------------------------- config and YAMLs
def load_cfg(name, *opts):
    from engine.config import setup_cfg
    from trainers.config import extend_cfg

    args = Namespace(config_file=os.path.join(REPO, "configs", "trainers", "PromptSRC", name + ".yaml"),
                     opts=list(opts))
    return setup_cfg(args, extend=extend_cfg)


def test_config_node_has_the_official_keys_and_defaults():
    from engine.config import get_cfg_default
    from trainers.config import extend_cfg

    node = extend_cfg(get_cfg_default()).TRAINER.PROMPTSRC
    official = {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
                "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25, "IMAGE_LOSS_WEIGHT": 10,
                "GPA_MEAN": 15, "GPA_STD": 1}
    assert {k: node[k] for k in official} == official
    assert set(node) == set(official) | {"UPSTREAM_NUMERICS"} and node.UPSTREAM_NUMERICS is False
    assert METHOD["trainer"] == "PromptSRC" and METHOD["checkpoint"] == "VLPromptLearner"


@pytest.mark.parametrize("name,epochs,depth,gpa", [
    ("vit_b16_c2_ep20_batch4_4+4ctx", 20, 9, (15, 1)),
    ("vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets", 20, 3, (6, 10)),
    ("vit_b16_c2_ep50_batch4_4+4ctx_few_shot", 50, 9, (30, 30))])
def test_official_yamls(name, epochs, depth, gpa):
    cfg = load_cfg(name)
    node = cfg.TRAINER.PROMPTSRC
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (0.0025, epochs, 4)
    depths_and_tokens = (node.PROMPT_DEPTH_TEXT, node.PROMPT_DEPTH_VISION, node.N_CTX_TEXT, node.N_CTX_VISION)
    assert depths_and_tokens == (depth, depth, 4, 4)
    assert (node.TEXT_LOSS_WEIGHT, node.IMAGE_LOSS_WEIGHT, node.GPA_MEAN, node.GPA_STD) == (25, 10, *gpa)
    assert node.PREC == "fp16" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert load_cfg(name, "TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT", "2.5").TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT == 2.5


def test_trainable_count_is_depth_times_tokens_times_width(clip_model):
    # tiny widths: text 64, vision 128; ViT-B/16 (512, 768) at 4+4 tokens, depth 9: 9*4*(512+768) = 46,080
    model = promptsrc(clip_model)
    counts = {n: p.numel() for n, p in model.prompt_learner.named_parameters()}
    assert sum(counts.values()) == 3 * 2 * 64 + 3 * 2 * 128
    assert set(counts) == {"ctx", "text_prompts.0", "text_prompts.1", "vision.vision_ctx",
                           "vision.vision_prompts.0", "vision.vision_prompts.1"}


def test_depth_errors_name_the_promptsrc_keys(clip_model):
    with pytest.raises(ValueError, match="TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION"):
        promptsrc(clip_model, depth_vision=9)
    with pytest.raises(ValueError, match="TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT"):
        promptsrc(clip_model, depth_text=4)


# ------------------------------------------------------------------------------------ loss terms
def test_teacher_text_features_are_the_template_ensemble(clip_model):
    assert promptsrc(clip_model).templates == IMAGENET_TEMPLATES  # the default: all 60 official templates
    assert len(IMAGENET_TEMPLATES) == 60 and len(set(IMAGENET_TEMPLATES)) == 60
    templates = IMAGENET_TEMPLATES[::10]  # 6 of them keep the hand computation fast
    model = promptsrc(clip_model, templates=templates)
    with torch.no_grad():
        per_template = [clip_model.encode_text(tokenize([t.format(c.replace("_", " ")) for c in CLASSNAMES]))
                        for t in templates]
    expected = F.normalize(torch.stack(per_template).mean(0), dim=-1)  # mean of raw features, then normalised
    assert torch.allclose(model.frozen_text_features(), expected, atol=1e-6)
    assert model.frozen_text_features() is model.frozen_text_features()  # computed once


def test_each_loss_term_against_a_hand_computation(clip_model, images):
    model = promptsrc(clip_model, text_loss_weight=25, image_loss_weight=10, templates=IMAGENET_TEMPLATES[:4])
    label = torch.tensor([0, 3, 1])
    _, terms = model.loss_terms(images, label)
    loss, summary = model.compute_loss(images, label)

    with torch.no_grad():
        text = F.normalize(model.text_features(), dim=-1)  # prompted
        img = F.normalize(model.image_features(images), dim=-1)
        zs_img = F.normalize(clip_model.encode_image(images), dim=-1)  # frozen CLIP, no prompts
        zs_txt = model.frozen_text_features()
        scale = clip_model.logit_scale.exp()
        logits, zs_logits = scale * img @ text.t(), scale * zs_img @ zs_txt.t()
        p, q = logits.softmax(1), zs_logits.softmax(1)
        kl = (q * (q.log() - p.log())).sum() / (3 * len(CLASSNAMES))
        l1_text = (text - zs_txt).abs().sum() / text.numel()
        l1_image = (img - zs_img).abs().sum() / img.numel()
        ce = -logits.log_softmax(1)[torch.arange(3), label].mean()
    assert torch.allclose(terms["kl"], kl, atol=1e-7) and kl > 0
    assert torch.allclose(terms["l1_text"], l1_text, atol=1e-7) and l1_text > 0
    assert torch.allclose(terms["l1_image"], l1_image, atol=1e-7) and l1_image > 0
    assert torch.allclose(terms["ce"], ce, atol=1e-6)
    total = ce + kl + 25 * l1_text + 10 * l1_image
    assert torch.allclose(loss, total, atol=1e-5)
    assert summary["loss"] == pytest.approx(total.item(), abs=1e-5)
    assert {k: summary[k] for k in ("loss_ce", "loss_kl", "loss_text", "loss_image")} == pytest.approx(
        {"loss_ce": ce.item(), "loss_kl": kl.item(), "loss_text": l1_text.item(), "loss_image": l1_image.item()},
        abs=1e-6)

    # the teacher side carries no gradient: the text term reaches only text prompts, the image term only vision ones
    prompts = dict(model.prompt_learner.named_parameters())
    for term, branch in (("l1_text", "text"), ("l1_image", "vision")):
        grads = torch.autograd.grad(terms[term], list(prompts.values()), retain_graph=True, allow_unused=True)
        reached = {n for n, g in zip(prompts, grads) if g is not None and g.abs().sum() > 0}
        assert reached == {n for n in prompts if n.startswith("vision.") == (branch == "vision")}, term


def test_terms_vanish_when_the_prompted_model_is_the_frozen_one(clip_model, images):
    # no prompts in either branch and the teacher's single template = the student's fixed sentence
    model = promptsrc(clip_model, depth_text=0, depth_vision=0, templates=("a photo of a {}.",))
    _, terms = model.loss_terms(images, torch.tensor([0, 1, 2]))
    assert terms["l1_image"].item() == 0.0
    assert terms["l1_text"].item() < 1e-7 and abs(terms["kl"].item()) < 1e-7


def test_self_regulating_terms_formula():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    zs_logits = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 2.0]])
    text, zs_text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), torch.tensor([[0.8, 0.6]] * 3)
    image, zs_image = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    terms = self_regulating_terms(logits, zs_logits, text, zs_text, image, zs_image)
    kl = 0.0
    for row, zrow in zip(logits.tolist(), zs_logits.tolist()):
        zp = [math.exp(v) / sum(math.exp(u) for u in zrow) for v in zrow]
        pp = [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
        kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(zp, pp))
    assert terms["kl"].item() == pytest.approx(kl / 6, abs=1e-7)
    assert terms["l1_text"].item() == pytest.approx((0.2 + 0.6 + 0.8 + 0.4 + 0.2 + 0.2) / 6, abs=1e-7)
    assert terms["l1_image"].item() == pytest.approx(2.0 / 4, abs=1e-7)


# ----------------------------------------------------------------------------- Gaussian weights
def test_gaussian_weights_closed_form():
    a = math.exp(-0.5)
    assert gaussian_weights(3, 2, 1) == pytest.approx([a / (1 + 2 * a), 1 / (1 + 2 * a), a / (1 + 2 * a)], abs=1e-15)
    w = gaussian_weights(20, 15, 1)  # official base-to-novel setting
    assert sum(w) == pytest.approx(1.0) and max(range(20), key=w.__getitem__) == 14
    assert w[13] == pytest.approx(w[15]) and w[0] < 1e-20
    with pytest.raises(ValueError, match="GPA_STD"):
        gaussian_weights(3, 2, 0)
    assert gaussian_weights(3, 1e6, 1) == [0.0, 0.0, 1.0]  # all in the tail: no 0/0, the nearest epoch
    assert gaussian_weights(1, 15, 1) == [1.0]  # a one-epoch smoke run keeps its prompts


# --------------------------------------------------------------------- GPA through the trainer
def make_trainer(data_root, out, *extra):
    from engine.config import setup_cfg
    from engine.trainer import build_trainer
    from trainers.config import extend_cfg

    opts = [*TINY, *TINY_PROMPTS, "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "4",
            "OPTIM.MAX_EPOCH", "3", "OPTIM.LR", "0.5", "OPTIM.WARMUP_EPOCH", "-1", "USE_CUDA", "False",
            "TRAINER.PROMPTSRC.PREC", "fp32", "TRAINER.PROMPTSRC.GPA_MEAN", "2",
            "TRAINER.PROMPTSRC.GPA_STD", "1", "TRAIN.CHECKPOINT_FREQ", "1", "DATASET.NUM_SHOTS", "2", *extra]
    args = Namespace(root=data_root, output_dir=str(out), trainer="PromptSRC", seed=1, config_file=os.path.join(
        REPO, B2N_CFG), dataset_config_file=os.path.join(REPO, "configs", "datasets", "shapes.yaml"), opts=opts)
    cfg = setup_cfg(args, extend=extend_cfg)
    return build_trainer(cfg)


def prompts_of(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def ckpt_state(out, epoch):
    return load_checkpoint(os.path.join(str(out), "VLPromptLearner", f"model.pth.tar-{epoch}"))["state_dict"]


@pytest.fixture(scope="module")
def gpa_run(data_root, tmp_path_factory):
    """A 3-epoch run (GPA N(2, 1)) with the prompts recorded at the end of every epoch."""
    out = tmp_path_factory.mktemp("gpa") / "run"
    trainer = make_trainer(data_root, out)
    per_epoch = []
    aggregate = trainer.aggregate_prompts

    def recording():
        per_epoch.append(prompts_of(trainer))
        aggregate()

    trainer.aggregate_prompts = recording
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect(level=logging.INFO)
    logging.getLogger("harness").addHandler(handler)
    try:
        trainer.train()
    finally:
        logging.getLogger("harness").removeHandler(handler)
    trainer.log_lines = lines
    return out, trainer, per_epoch


def test_final_checkpoint_holds_the_gaussian_weighted_sum(gpa_run):
    out, trainer, per_epoch = gpa_run
    assert len(per_epoch) == 3
    w = gaussian_weights(3, 2, 1)
    expected = {n: sum(w[e] * per_epoch[e][n].double() for e in range(3)) for n in per_epoch[0]}
    final = ckpt_state(out, 3)
    assert set(final) == set(expected)  # only the learned tensors: no running sum, no CLIP weights
    for name, value in expected.items():
        assert torch.allclose(final[name].double(), value, atol=1e-6), name
        assert not torch.allclose(final[name], per_epoch[2][name], atol=1e-4), name  # not the last-epoch prompts
    # the model evaluated at the end of training is the aggregated one
    for name, value in prompts_of(trainer).items():
        assert torch.equal(value, final[name])
    lines = trainer.log_lines
    gpa = lines.index("Using the Gaussian-aggregated prompts (GPA) for the final model")
    assert gpa < max(i for i, line in enumerate(lines) if "=> result" in line)


def test_intermediate_checkpoint_holds_raw_prompts_and_running_sum(gpa_run):
    out, _, per_epoch = gpa_run
    w = gaussian_weights(3, 2, 1)
    state = ckpt_state(out, 2)
    for name, value in per_epoch[1].items():
        assert torch.equal(state[name], value)
        running = w[0] * per_epoch[0][name].double() + w[1] * per_epoch[1][name].double()
        assert torch.allclose(state["gpa_sum." + name].double(), running, atol=1e-6)


def test_resume_continues_the_same_aggregate(gpa_run, data_root, tmp_path):
    out, _, _ = gpa_run
    resumed = tmp_path / "resumed"
    shutil.copytree(str(out), str(resumed))
    folder = resumed / "VLPromptLearner"
    (folder / "model.pth.tar-3").unlink()
    (folder / "checkpoint").write_text("model.pth.tar-2\n")
    make_trainer(data_root, resumed).train()
    final, again = ckpt_state(out, 3), ckpt_state(resumed, 3)
    assert set(final) == set(again)
    for name in final:
        assert torch.allclose(again[name], final[name], atol=1e-7), name


def test_official_checkpoint_layout_loads(gpa_run):
    _, trainer, _ = gpa_run
    ours = prompts_of(trainer)
    official = {"prompt_learner.ctx": ours["prompt_learner.ctx"] + 1,
                "prompt_learner.token_prefix": torch.zeros(4, 1, 64),
                "image_encoder.VPT": ours["prompt_learner.vision.vision_ctx"] + 1,
                "prompt_learner.ZS_image_encoder.conv1.weight": torch.zeros(128, 3, 16, 16),
                "image_encoder.conv1.weight": torch.zeros(128, 3, 16, 16)}
    for i in (1, 2):
        official[f"image_encoder.transformer.resblocks.{i}.VPT_shallow"] = ours[
            f"prompt_learner.vision.vision_prompts.{i - 1}"] + 1
        official[f"text_encoder.transformer.resblocks.{i}.VPT_shallow"] = ours[
            f"prompt_learner.text_prompts.{i - 1}"] + 1
    try:
        trainer.load_state_dict_from_checkpoint("VLPromptLearner", official, source="official.pth")
        for name, value in prompts_of(trainer).items():
            assert torch.equal(value, ours[name] + 1), name
    finally:  # the module-scoped run is shared with other tests
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if name in ours:
                    param.copy_(ours[name])


# ------------------------------------------------------------------------------- end to end
RESULT = re.compile(r"^=> result\n\* total: ([\d,]+)\n\* correct: ([\d,]+)\n\* accuracy: ([\d.]+)%$", re.M)


def test_train_py_base_then_novel(data_root, tmp_path):
    import train

    common = ["--root", data_root, "--seed", "1", "--trainer", "PromptSRC", "--dataset-config-file",
              os.path.join(REPO, "configs", "datasets", "shapes.yaml"), "--config-file", os.path.join(REPO, B2N_CFG)]
    opts = [*TINY, *TINY_PROMPTS, "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "2", "TRAINER.PROMPTSRC.GPA_MEAN", "2"]
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    assert train.main([*common, "--output-dir", str(train_dir), *opts, "DATASET.SUBSAMPLE_CLASSES", "base"]) == 0
    with open(train_dir / "log.txt", encoding="utf-8") as f:
        log = f.read()
    assert "Using the Gaussian-aggregated prompts (GPA) for the final model" in log
    assert re.search(r"loss_kl [\d.]+ \([\d.]+\)", log) and re.search(r"loss_image [\d.]+", log)
    assert [b[0] for b in RESULT.findall(log)] == ["6"]  # 2 base classes x 3 test images
    assert (train_dir / "VLPromptLearner" / "model.pth.tar-2").is_file()

    rc = train.main([*common, "--output-dir", str(test_dir), "--eval-only", "--model-dir", str(train_dir),
                     "--load-epoch", "2", *opts, "DATASET.SUBSAMPLE_CLASSES", "new"])
    assert rc == 0
    with open(test_dir / "log.txt", encoding="utf-8") as f:
        log = f.read()
    assert f'Loading weights to VLPromptLearner from "{train_dir / "VLPromptLearner" / "model.pth.tar-2"}"' in log
    assert "Unexpected keys" not in log
    assert [b[0] for b in RESULT.findall(log)] == ["6"]  # 2 novel classes x 3 test images


def test_sweep_plans_promptsrc(tmp_path):
    from repro.methods import METHOD_ORDER, get_method
    from repro.plan import Context, make_job

    spec = get_method("promptsrc")
    assert spec.trainer == "PromptSRC" and get_method("PromptSRC") is spec and "promptsrc" in METHOD_ORDER
    assert (spec.node, spec.checkpoint, spec.prec) == ("PROMPTSRC", "VLPromptLearner", "fp16")
    ctx = Context(repo_root=REPO, output_root=str(tmp_path), data_root="DATA")
    train_job = make_job(ctx, "promptsrc", "base2new_train", "oxford_pets", 1)
    test_job = make_job(ctx, "promptsrc", "base2new_test", "oxford_pets", 1)
    assert train_job.problem is None and test_job.problem is None
    assert B2N_CFG in train_job.args and "TRAINER.PROMPTSRC.PREC" in train_job.args
    assert test_job.load_epoch == 20 and test_job.model_dir == train_job.output_dir
    xd = make_job(ctx, "promptsrc", "xd_train", "imagenet", 1)
    assert os.path.join("configs", "trainers", "PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml") \
        in xd.args
    fewshot = make_job(ctx, "promptsrc", "fewshot", "caltech101", 1, shots=4)
    assert fewshot.problem is None and fewshot.cfg == "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
    assert fewshot.args[fewshot.args.index("DATASET.NUM_SHOTS") + 1] == "4"


def test_upstream_numerics_on_an_fp16_backbone(images):
    from trainers.base import cast_clip

    clip16 = cast_clip(build_random_clip("ViT-Tiny/16", seed=0), torch.float16)
    model = promptsrc(clip16, upstream_numerics=True, templates=IMAGENET_TEMPLATES[:2])
    model.upstream_numerics = True  # what the trainer sets from TRAINER.PROMPTSRC.UPSTREAM_NUMERICS
    assert model.prompt_learner.ctx.dtype == torch.float16  # built in CLIP's dtype, as upstream
    logits, terms = model.loss_terms(images, torch.tensor([0, 1, 2]))
    assert logits.dtype == torch.float16 and terms["kl"].dtype == torch.float16
    assert model.frozen_text_features().dtype == torch.float32  # the L1 target stays fp32 (upstream's)
    loss, _ = model.compute_loss(images, torch.tensor([0, 1, 2]))
    assert torch.isfinite(loss)
