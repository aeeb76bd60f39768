"""ProGrad on the tiny random CLIP in fp32: logits, losses and the projected gradient against the
official arithmetic written out here; the ``CTX_INIT True`` initialisation; the official YAMLs loading
unchanged; a base-to-novel run through the scripts' job runner; the sweep's plan.

The official arithmetic (BeierZhu/Prompt-align, ``trainers/prograd.py`` and its Dassl fork's
``prograd_backward_and_update``), restated from its formulae, not imported:
``prompts = cat(token_prefix, ctx, token_suffix)``, the text encoder ``ln_final(transformer(prompts +
pos))[EOT] @ text_projection``, student logits ``exp(s) * img^ @ txt^.T``, zero-shot logits from the
template sentences ``exp(s) * img^ @ zs^.T``, ``xe = CE(student, y)``,
``kl = mean_i sum_c -softmax(zs/T) * log_softmax(student/T) * T * T``; gradients ``a = d xe / d ctx``,
``b = d kl / d ctx``; ``b^ = b / |b|``, ``a^ = a / |a|``; if ``a^ . b^ < 0`` the gradient is
``a - lambda (a . b^) b^``, else ``a``.
"""
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from engine.backbone import build_random_clip, tokenize
from engine.config import get_cfg_default
from engine.config.setup import merge_from_file, merge_from_list
from engine.trainer import TrainerBase
from engine.training.update_step import UpdateStepMixin
from repro.methods import get_method
from repro.plan import Context, build_plan
from tests.fixtures_data import make_shapes
from trainers.config import extend_cfg
from trainers.prograd import PROGRAD_TEMPLATES, ProGrad, ProGradCLIP, aligned_context, init_words, project_conflicting

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSNAMES = ["golden_retriever", "cat", "sea lion"]
TEMPLATE = "a photo of a {}."
N_CTX = 4


@pytest.fixture(scope="module")
def clip_model():
    return build_random_clip("ViT-Tiny/16", seed=0).eval()


def build(clip_model, temperature=1.0, context=None):
    torch.manual_seed(0)
    return ProGradCLIP(clip_model, CLASSNAMES, TEMPLATE, temperature=temperature, n_ctx=N_CTX, csc=False,
                       position="end", context=context)


def official_text_encoder(clip_model, prompts, tokenized):
    """The official ``TextEncoder.forward`` (CoOp/ProGrad)."""
    x = prompts + clip_model.positional_embedding
    x = clip_model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ clip_model.text_projection


def official_step(clip_model, ctx, images, label, lam, temperature, prefix_words):
    """Logits, losses and the projected gradient of ``ctx`` by the official formulae."""
    names = [n.replace("_", " ") for n in CLASSNAMES]
    tokenized = tokenize([f"{prefix_words} {n}." for n in names])
    with torch.no_grad():
        embedding = clip_model.token_embedding(tokenized)
        zs = clip_model.encode_text(tokenize([TEMPLATE.format(n) for n in names]))
        zs = zs / zs.norm(dim=-1, keepdim=True)
        image = clip_model.encode_image(images)
        image = image / image.norm(dim=-1, keepdim=True)
    ctx = ctx.detach().clone().requires_grad_(True)
    prompts = torch.cat([embedding[:, :1], ctx.unsqueeze(0).expand(len(names), -1, -1),
                         embedding[:, 1 + ctx.shape[0]:]], dim=1)
    text = official_text_encoder(clip_model, prompts, tokenized)
    text = text / text.norm(dim=-1, keepdim=True)
    scale = clip_model.logit_scale.exp()
    logits = scale * image @ text.t()
    zs_logits = scale * image @ zs.t()
    xe = F.cross_entropy(logits, label)
    tea_prob = F.softmax(zs_logits / temperature, dim=-1)
    kl = (-tea_prob * F.log_softmax(logits / temperature, -1) * temperature * temperature).sum(1).mean()
    b = torch.autograd.grad(kl, ctx, retain_graph=True)[0]
    a = torch.autograd.grad(xe, ctx)[0]
    b_norm = b / torch.linalg.norm(b)
    a_norm = a / torch.linalg.norm(a)
    cos = torch.dot(a_norm.flatten(), b_norm.flatten())
    grad = a - lam * torch.dot(a.flatten(), b_norm.flatten()) * b_norm if cos < 0 else a
    return {"logits": logits.detach(), "zs_logits": zs_logits, "xe": xe.detach(), "kl": kl.detach(),
            "grad": grad, "cos": cos.item(), "a": a}


class StepOnly(UpdateStepMixin):
    """The engine's update step with ProGrad's projection around one prompt learner (plain SGD)."""

    get_model_names = TrainerBase.get_model_names
    combine_gradients = ProGrad.combine_gradients

    def __init__(self, model, lam, scaler=None):
        self.model = model
        self._models = {"prompt_learner": model.prompt_learner}
        self._optims = {"prompt_learner": torch.optim.SGD(model.prompt_learner.parameters(), lr=0.1)}
        self.cfg = SimpleNamespace(LOSS=SimpleNamespace(LAMBDA=lam))
        self.scaler = scaler


@pytest.mark.parametrize("lam, temperature, seed", [(1.0, 1.0, 3), (0.8, 2.0, 3), (1.0, 1.0, 5)])
def test_logits_losses_and_projected_gradient_equal_the_official_arithmetic(clip_model, lam, temperature, seed):
    model = build(clip_model, temperature=temperature)
    ctx0 = model.prompt_learner.ctx.detach().clone()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    label = torch.tensor([0, 2, 1, 0]) if seed == 3 else torch.tensor([1, 1, 2, 0])
    ref = official_step(clip_model, ctx0, images, label, lam, temperature, " ".join(["X"] * N_CTX))

    torch.testing.assert_close(model(images).detach(), ref["logits"], atol=1e-5, rtol=1e-5)
    image_features = model.image_features(images)
    torch.testing.assert_close(model.zero_shot_logits(image_features), ref["zs_logits"], atol=1e-5, rtol=1e-5)
    trainer = StepOnly(model, lam)
    losses, summary = model.compute_loss(images, label)
    assert list(losses) == ["kl", "xe"] and list(summary) == ["xe_loss", "kl_loss", "acc"]
    torch.testing.assert_close(losses["xe"].detach(), ref["xe"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses["kl"].detach(), ref["kl"], atol=1e-5, rtol=1e-5)
    assert summary["acc"] == pytest.approx(100.0 * (ref["logits"].argmax(1) == label).float().mean().item())
    trainer.update_step(losses)
    ctx = model.prompt_learner.ctx
    scale = ref["grad"].abs().max().item()
    assert scale > 1e-3
    assert (ctx.grad - ref["grad"]).abs().max().item() <= 1e-4 * scale  # fp32 rounding of two text encoders
    assert (ctx.detach() - (ctx0 - 0.1 * ref["grad"])).abs().max().item() <= 1e-4 * 0.1 * scale
    if ref["cos"] < 0:  # the projection acted: the stepped gradient is not the CE gradient
        assert (ref["grad"] - ref["a"]).abs().max() > 1e-3 * ref["a"].abs().max()


def test_the_cases_above_cover_both_branches(clip_model):
    """Seeds 3 and 5 give one conflicting and one aligned pair of gradients (else the test is weak)."""
    coses = []
    for seed, label in ((3, [0, 2, 1, 0]), (5, [1, 1, 2, 0])):
        images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
        model = build(clip_model)
        coses.append(official_step(clip_model, model.prompt_learner.ctx, images, torch.tensor(label), 1.0, 1.0,
                                   " ".join(["X"] * N_CTX))["cos"])
    assert min(coses) < 0 < max(coses), coses


def test_projection_formula_on_known_vectors():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[-1.0, 1.0]])
    # cos(a, b) < 0: remove lambda times a's component along b^ = (-1, 1)/sqrt2: (1, 0) - 0.5*(-1/2)*... exact:
    b_hat = b / b.norm()
    expected = a - 0.5 * (a.flatten() @ b_hat.flatten()) * b_hat
    torch.testing.assert_close(project_conflicting(a, b, 0.5), expected)
    torch.testing.assert_close(project_conflicting(a, b, 1.0), torch.tensor([[0.5, 0.5]]))  # orthogonal to b
    assert project_conflicting(a, -b, 1.0) is a  # aligned: unchanged
    assert project_conflicting(None, b, 1.0) is None and project_conflicting(a, None, 1.0) is a


def test_ctx_init_true_uses_the_template_words_right_aligned_as_upstream(clip_model):
    # official: ctx = zeros(n_ctx, D); ctx[n_ctx - w:] = embedding[0, 1:1 + w] with w = word count;
    # sentence "X .. X <words> <class>." and token_suffix from position 1 + n_ctx
    words = init_words("True", PROGRAD_TEMPLATES["OxfordPets"])
    assert words == "a type of pet, a photo of a" and init_words("False", TEMPLATE) == "" == init_words("", TEMPLATE)
    assert init_words("a_good photo", TEMPLATE) == "a good photo"
    ctx, prefix = aligned_context(clip_model, 16, words)
    assert prefix == " ".join(["X"] * 8) + " " + words  # 8 words (10 tokens: "pet" "," are two)
    with torch.no_grad():
        emb = clip_model.token_embedding(tokenize([words]))
    assert ctx[:8].abs().sum() == 0
    torch.testing.assert_close(ctx[8:], emb[0, 1:9])
    model = build(clip_model, context=(ctx, prefix))
    names = [n.replace("_", " ") for n in CLASSNAMES]
    with torch.no_grad():
        sentences = clip_model.token_embedding(tokenize([f"{prefix} {n}." for n in names]))
    torch.testing.assert_close(model.prompt_learner.token_suffix, sentences[:, 17:])
    torch.testing.assert_close(model.prompt_learner.ctx.detach(), ctx)
    with pytest.raises(ValueError, match=r"TRAINER\.COOP\.N_CTX=4 is smaller than the 8 words"):
        aligned_context(clip_model, 4, words)


def test_official_yaml_and_script_options_load_unchanged():
    cfg = extend_cfg(get_cfg_default())
    assert dict(cfg.LOSS) == {"NAME": "", "T": 1.0, "LAMBDA": 1.0, "GM": False, "ALPHA": 0.0}
    for name in ("rn50", "rn50_ep100", "rn50_ep50"):
        merge_from_file(cfg, os.path.join(REPO, "configs", "trainers", "ProGrad", f"{name}.yaml"))
    merge_from_list(cfg, ["LOSS.LAMBDA", "0.8", "TRAINER.COOP.N_CTX", "16", "TRAINER.COOP.CSC", "False",
                          "TRAINER.COOP.CLASS_TOKEN_POSITION", "end", "DATASET.NUM_SHOTS", "4",
                          "DATASET.SUBSAMPLE_CLASSES", "base"])
    assert (cfg.LOSS.NAME, cfg.LOSS.T, cfg.LOSS.LAMBDA, cfg.OPTIM.MAX_EPOCH) == ("prograd", 1.0, 0.8, 50)
    assert cfg.TRAINER.COOP.CTX_INIT == "True"  # the official bool, read as the template words


@pytest.mark.slow
def test_base2new_train_and_test_through_the_job_runner(tmp_path, monkeypatch):
    """``scripts/prograd/base2new_{train,test}.sh`` run ``python -m repro.job``: the same, in process."""
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
    assert job.main(["prograd", "base2new_train", "shapes", "1", *opts]) == 0
    assert job.main(["prograd", "base2new_test", "shapes", "1", *opts]) == 0
    run = "shots_4/ProGrad/rn50_ep100/seed1"
    train_dir = tmp_path / "out/base2new/train_base/shapes" / run
    test_dir = tmp_path / "out/base2new/test_new/shapes" / run
    train_log = (train_dir / "log.txt").read_text()
    # ctx: 16 positions x 64 (official config: CTX_INIT True -> "X" * 12 + "a photo of a")
    assert "xe_loss" in train_log and "kl_loss" in train_log and "Trainable parameters: 1,024" in train_log
    assert 'Initial context: "X X X X X X X X X X X X a photo of a"' in train_log
    assert (train_dir / "prompt_learner" / "model.pth.tar-1").is_file()
    assert "=> result" in (test_dir / "log.txt").read_text()


def test_sweep_plans_prograd_with_its_official_configs(tmp_path):
    spec = get_method("prograd")
    assert (spec.trainer, spec.node, spec.prec, spec.checkpoint) == ("ProGrad", "PROGRAD", "fp16", "prompt_learner")
    ctx = Context(repo_root=REPO, output_root=str(tmp_path / "out"), data_root=str(tmp_path / "data"), opts=[])
    jobs = build_plan(ctx, ["base2new"], ["ProGrad"], ["dtd", "imagenet"], [1])
    assert [j.id for j in jobs if j.kind == "base2new_train"] == [
        "base2new/train_base/dtd/shots_16/ProGrad/rn50_ep100/seed1",
        "base2new/train_base/imagenet/shots_16/ProGrad/rn50_ep50/seed1"]
    assert sorted(j.load_epoch for j in jobs if j.kind == "base2new_test") == [50, 100]


@pytest.mark.slow
def test_sweep_and_tables_on_shapes(tmp_path):
    """``tools/sweep.py --methods ProGrad`` (base-to-novel, one seed) and ``tools/collect_results.py
    --compare docs/paper_numbers.json``: the table's ProGrad row holds the logged accuracies and the
    published averages beside them."""
    import json
    import subprocess
    import sys

    make_shapes(tmp_path / "data", classes=("circle", "square", "triangle", "star"),
                counts={"train": 6, "val": 2, "test": 3}, size=32)
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_TRAIN_PY", "CFG", "CONFIG_ROOT")}
    out = tmp_path / "out"
    opts = ["MODEL.BACKBONE.NAME", "ViT-Tiny/16", "MODEL.BACKBONE.RANDOM_INIT", "True", "INPUT.SIZE", "(32, 32)",
            "OPTIM.MAX_EPOCH", "1", "TRAINER.PROGRAD.PREC", "fp32", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "16", "DATALOADER.TEST.BATCH_SIZE", "40"]
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "sweep.py"), "--protocol", "base2new",
                        "--methods", "ProGrad", "--datasets", "shapes", "--seeds", "1", "--output-root", str(out),
                        "--data", str(tmp_path / "data"), *opts], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 jobs, 0 finished already, 2 to run" in r.stdout
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(out), "--format",
                        "json", "--compare", os.path.join(REPO, "docs", "paper_numbers.json")],
                       capture_output=True, text=True, check=True)
    cell = json.loads(r.stdout)["base2new"]["methods"]["ProGrad"]["datasets"]["shapes"]
    for role, folder in (("base", "train_base"), ("novel", "test_new")):
        run = out / "base2new" / folder / "shapes/shots_16/ProGrad/rn50_ep100/seed1"
        assert cell[role]["seeds"] == {"1": json.loads((run / "metrics.json").read_text())["accuracy"]}
    md = subprocess.run([sys.executable, os.path.join(REPO, "tools", "collect_results.py"), str(out), "--compare",
                         os.path.join(REPO, "docs", "paper_numbers.json")], capture_output=True, text=True,
                        check=True).stdout
    assert "ProGrad" in md and "82.48" in md and "70.75" in md
