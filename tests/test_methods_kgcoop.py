"""KgCoOp on the tiny random CLIP: L_kg and the total loss against a hand computation, the targets
equal vanilla CLIP's template features, official checkpoint keys, a base-to-novel run through the
scripts' job runner, and the sweep's plan.

Hand computation: ``L = CE(exp(s) cos(f(x), g(t_c)), y) + W * L_kg`` with
``L_kg = (1 / 2C) sum_c ||w^_c - w^_c^clip||^2`` (= 1 - mean cosine of unit vectors).
"""
import os

import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from repro.methods import get_method
from repro.plan import Context, build_plan
from tests.fixtures_data import make_shapes
from trainers.kgcoop import KgCoOpCLIP

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSNAMES = ["golden_retriever", "cat", "sea lion"]
TEMPLATE = "a photo of a {}, a type of pet."


@pytest.fixture(scope="module")
def clip_model():
    return build_random_clip("ViT-Tiny/16", seed=0).eval()


def build(clip_model, weight=8.0, **coop):
    torch.manual_seed(0)
    opts = dict(n_ctx=4, ctx_init="", csc=False, position="end")
    opts.update(coop)
    return KgCoOpCLIP(clip_model, CLASSNAMES, TEMPLATE, weight=weight, **opts)


def test_targets_are_vanilla_clip_template_features(clip_model):
    model = build(clip_model)
    with torch.no_grad():
        ref = clip_model.encode_text(tokenize([TEMPLATE.format(n.replace("_", " ")) for n in CLASSNAMES]))
    torch.testing.assert_close(model.clip_text_features, F.normalize(ref.float(), dim=-1), atol=1e-5, rtol=1e-5)
    assert "clip_text_features" not in model.state_dict()  # fixed, rebuilt per class set: never saved


def test_knowledge_loss_and_total_loss_equal_hand_computation(clip_model):
    model = build(clip_model, weight=8.0)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    label = torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        target = F.normalize(clip_model.encode_text(tokenize(
            [TEMPLATE.format(n.replace("_", " ")) for n in CLASSNAMES])).float(), dim=-1)
        prompted = F.normalize(model.text_features().float(), dim=-1)
        image = F.normalize(clip_model.encode_image(images).float(), dim=-1)
    kg_hand = ((prompted - target) ** 2).sum(dim=-1).mean() / 2
    logits = clip_model.logit_scale.exp().float() * image @ prompted.t()
    total_hand = F.cross_entropy(logits, label) + 8.0 * kg_hand
    assert kg_hand.item() > 1e-3  # random context: the learned prompt is far from the template
    loss, summary = model.compute_loss(images, label)
    torch.testing.assert_close(model.knowledge_loss(model.text_features()).detach(), kg_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.detach(), total_hand, atol=1e-4, rtol=1e-5)
    assert set(summary) == {"loss", "loss_kg", "acc"}
    assert summary["loss_kg"] == pytest.approx(kg_hand.item(), abs=1e-5)
    assert summary["acc"] == pytest.approx(100.0 * (logits.argmax(1) == label).float().mean().item())
    assert [n for n, _ in model.prompt_learner.named_parameters()] == ["ctx"]  # the only learned tensor
    model.knowledge_loss(model.text_features()).backward()  # L_kg reaches the context
    assert model.prompt_learner.ctx.grad is not None and model.prompt_learner.ctx.grad.abs().sum() > 0


def test_weight_zero_is_coop_cross_entropy(clip_model):
    model = build(clip_model, weight=0.0)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    label = torch.tensor([1, 2])
    loss, _ = model.compute_loss(images, label)
    torch.testing.assert_close(loss, F.cross_entropy(model(images), label))


def test_ctx_init_sets_context_from_words_and_template_prompt_means_zero_kg(clip_model):
    # context "a photo of a" + the class name, and the template "a photo of a {}.": L_kg = 0
    model = KgCoOpCLIP(clip_model, CLASSNAMES, "a photo of a {}.", weight=8.0, n_ctx=4, ctx_init="a photo of a")
    assert tuple(model.prompt_learner.ctx.shape) == (4, 64)
    assert model.knowledge_loss(model.text_features()).abs().item() < 1e-5


def test_official_checkpoint_unused_tensors_are_dropped(clip_model):
    model = build(clip_model)
    official = {"ctx": torch.zeros(4, 64), "bias_vectors": torch.zeros(1, 512),
                "meta_net.linear1.weight": torch.zeros(512, 512), "meta_net.linear1.bias": torch.zeros(512),
                "token_prefix": torch.zeros(3, 1, 64)}
    assert set(model.load_legacy_state_dict(dict(official))) == {"ctx", "token_prefix"}


@pytest.mark.slow
def test_base2new_train_and_test_through_the_job_runner(tmp_path, monkeypatch, capsys):
    """``scripts/kgcoop/base2new_{train,test}.sh`` run ``python -m repro.job``: the same, in process."""
    from repro import job

    data = tmp_path / "data"
    make_shapes(data, classes=("circle", "square", "triangle", "star"), counts={"train": 6, "val": 2, "test": 3},
                size=32)
    monkeypatch.setenv("DATA", str(data))
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.chdir(REPO)
    opts = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
    assert job.main(["kgcoop", "base2new_train", "shapes", "1", *opts]) == 0
    assert job.main(["kgcoop", "base2new_test", "shapes", "1", *opts]) == 0
    run = "shots_4/KgCoOp/vit_b16_ep100_ctxv1/seed1"  # the folder names the shots actually used
    train_dir = tmp_path / "out/base2new/train_base/shapes" / run
    test_dir = tmp_path / "out/base2new/test_new/shapes" / run
    train_log = (train_dir / "log.txt").read_text()
    assert "loss_kg" in train_log and "Trainable parameters: 256" in train_log  # ctx: 4 words x 64
    assert (train_dir / "prompt_learner" / "model.pth.tar-1").is_file()
    assert "=> result" in (test_dir / "log.txt").read_text()


def test_sweep_plans_kgcoop_with_its_official_configs(tmp_path):
    spec = get_method("kgcoop")
    assert (spec.trainer, spec.node, spec.prec, spec.checkpoint) == ("KgCoOp", "KGCOOP", "fp16", "prompt_learner")
    assert get_method("KGCOOP") is spec
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"), opts=[])
    jobs = build_plan(ctx, ["base2new", "xd"], ["KgCoOp"], ["dtd"], [1])
    assert [j.kind for j in jobs] == ["base2new_train", "base2new_test", "xd_train", "xd_test"]
    assert jobs[0].id == "base2new/train_base/dtd/shots_16/KgCoOp/vit_b16_ep100_ctxv1/seed1"
    assert {j.load_epoch for j in jobs if j.kind.endswith("_test")} == {100}
