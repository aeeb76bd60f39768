"""Method declarations: one ``METHOD`` literal per trainer file drives the config nodes, the
registry, the sweep's method table and the benchmark's list; the shared prompt layer applies one
N_CTX-fits-CTX_INIT rule to every method; precision names are checked in one place."""
import os
import subprocess
import sys

import pytest

from engine.config import get_cfg_default
from engine.config.setup import ConfigError, validate_cfg
from engine.precision import PREC_NAMES, check_prec
from repro.methods import METHOD_ORDER, METHODS, get_method, load_methods
from engine.trainer import TRAINER_REGISTRY
from trainers.config import extend_cfg, method_declarations

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_declaration_matches_its_registered_trainer():
    import trainers  # noqa: F401  (registration)

    decls = method_declarations()
    assert [d["key"] for d in decls] == list(METHOD_ORDER)
    for decl in decls:
        cls = TRAINER_REGISTRY.get(decl["trainer"])
        assert cls.__name__ == decl["trainer"] and cls.CFG_NODE == decl["node"]
        if decl["checkpoint"]:
            assert cls.MODEL_NAME == decl["checkpoint"]
        for alias in decl["aliases"]:
            assert TRAINER_REGISTRY.get(alias) is cls
        spec = METHODS[decl["key"]]
        assert (spec.trainer, spec.node, spec.prec, spec.zero_shot) == \
            (decl["trainer"], decl["node"], decl["prec"], decl["zero_shot"])
        for cfg_name in {spec.b2n_cfg, spec.xd_cfg, *spec.b2n_cfg_per_dataset.values()}:
            assert os.path.isfile(os.path.join(REPO, "configs", "trainers", spec.config_dir, cfg_name + ".yaml"))


def test_extend_cfg_adds_exactly_the_declared_nodes_and_defaults():
    cfg = extend_cfg(get_cfg_default())
    decls = method_declarations()
    extra = {(path, key): value
             for d in decls for path, keys in d["extra_config"].items() for key, value in keys.items()}
    for decl in decls:  # the node's declared keys, plus those other methods declare in it (extra_config)
        added = {key: value for (path, key), value in extra.items() if path == f"TRAINER.{decl['node']}"}
        assert dict(cfg.TRAINER[decl["node"]]) == {**decl["config"], **added}
    for (path, key), value in extra.items():
        node = cfg
        for part in path.split("."):
            node = node[part]
        assert node[key] == value
    assert cfg.TRAINER.KGCOOP.W == 8.0 and cfg.TRAINER.COOP.N_CTX == 16 and cfg.TRAINER.COMMA.WEIGHT == 1.0
    assert get_method("KgCoOp").key == "kgcoop" and get_method("comma").trainer == "CoMMA"
    assert get_method("COMMA").trainer == "CoMMA" and get_method("zeroshot").zero_shot


def test_method_table_and_config_nodes_are_read_without_torch():
    code = ("import sys; import repro.methods as m; from engine.runs.record import default_settings; "
            f"default_settings({REPO!r}); assert 'kgcoop' in m.METHODS; assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _write(folder, name, text):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write(text)


GOOD = ('METHOD = {"key": "toy", "trainer": "Toy", "node": "TOY", "config": {"PREC": "fp32", '
        '"UPSTREAM_NUMERICS": False, "ALPHA": 0.5}, "b2n_cfg": "a", "xd_cfg": "b", "order": 5}\n')


def test_a_new_method_file_is_a_new_table_row(tmp_path):
    import shutil

    shutil.copy(os.path.join(REPO, "trainers", "config.py"), tmp_path / "config.py")
    _write(tmp_path, "toy.py", "import torch  # never imported by the reader\n" + GOOD)
    spec = load_methods(str(tmp_path))["toy"]
    assert (spec.trainer, spec.config_dir, spec.prec, spec.checkpoint, spec.order) == \
        ("Toy", "Toy", "fp32", "prompt_learner", 5)
    cfg = extend_cfg(get_cfg_default(), directory=str(tmp_path))
    assert cfg.TRAINER.TOY.ALPHA == 0.5


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('"order": 5', '"order": "5"'), r"METHOD\['order'\] must be of type int"),
    (GOOD.replace('"b2n_cfg": "a", ', ""), r"METHOD\['b2n_cfg'\] must be of type str"),
    (GOOD.replace('"PREC": "fp32", ', ""), "must define PREC"),
    (GOOD.replace('"fp32"', '"fp8"'), "must be one of fp32, fp16, bf16, amp"),
    (GOOD.replace('"order": 5', '"order": 5, "colour": 1'), "unknown METHOD field"),
    ("X = 1\nMETHOD = {'key': X}\n", "must be a literal dict"),
    (GOOD + GOOD.replace("METHOD", "OTHER"), None),  # only METHOD is read
])
def test_bad_declarations_are_one_line_errors_naming_the_file(tmp_path, text, message):
    _write(tmp_path, "toy.py", text)
    if message is None:
        assert [d["key"] for d in method_declarations(str(tmp_path))] == ["toy"]
        return
    with pytest.raises(ValueError, match=message) as err:
        method_declarations(str(tmp_path))
    assert str(tmp_path / "toy.py") in str(err.value) and "\n" not in str(err.value)


def test_duplicate_keys_are_rejected(tmp_path):
    _write(tmp_path, "a.py", GOOD)
    _write(tmp_path, "b.py", GOOD.replace('"Toy"', '"Toy2"').replace('"TOY"', '"TOY2"'))
    with pytest.raises(ValueError, match="key 'toy' is already declared"):
        method_declarations(str(tmp_path))


def test_precision_names_are_checked_in_one_place():
    assert PREC_NAMES == ("fp32", "fp16", "bf16", "amp") and check_prec("bf16", "X") == "bf16"
    with pytest.raises(ValueError, match=r"bad value for TRAINER\.KGCOOP\.PREC: 'fp8'; expected one of"):
        check_prec("fp8", "TRAINER.KGCOOP.PREC")
    cfg = extend_cfg(get_cfg_default())
    cfg.TRAINER.KGCOOP.PREC = "half"
    with pytest.raises(ConfigError, match=r"TRAINER\.KGCOOP\.PREC: 'half'"):
        validate_cfg(cfg)


def test_benchmark_lists_every_declared_method():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        from benchmarking.variants import default_methods  # tools/benchmark.py's package
    finally:
        sys.path.pop(0)
    assert default_methods() == tuple(s.trainer for s in METHODS.values())
    assert "KgCoOp" in default_methods()


def test_ctx_must_fit_ctx_init_for_every_method():
    """One rule in ``trainers.prompts.init_context``: N_CTX larger than CTX_INIT's tokens is an error
    for MaPLe/CoMMA too (it used to embed EOT and padding as context there)."""
    from engine.backbone import build_random_clip
    from trainers.maple import MultiModalPromptLearner
    from trainers.prompts import init_context

    clip_model = build_random_clip("ViT-Tiny/16", seed=0).eval()
    ctx, prefix = init_context(clip_model, 2, "a_photo of")
    assert tuple(ctx.shape) == (2, 64) and prefix == "a photo of"
    cfg = extend_cfg(get_cfg_default())
    cfg.TRAINER.MAPLE.PROMPT_DEPTH, cfg.TRAINER.MAPLE.N_CTX, cfg.TRAINER.MAPLE.CTX_INIT = 2, 3, "a photo"
    with pytest.raises(ValueError, match=r"TRAINER\.MAPLE\.N_CTX=3 exceeds the 2 tokens of CTX_INIT 'a photo'"):
        MultiModalPromptLearner(cfg, clip_model, ["cat", "dog"])
    cfg.TRAINER.MAPLE.N_CTX = 5  # above MaPLe's limit of 4 initialised tokens: random context, "X" words
    learner = MultiModalPromptLearner(cfg, clip_model, ["cat", "dog"])
    assert tuple(learner.ctx.shape) == (5, 64)


def _extra(decl_text, extra):
    return decl_text.replace('"order": 5', f'"order": 5, "extra_config": {extra!r}')


def test_extra_config_creates_nodes_and_keys_outside_the_method_node(tmp_path):
    _write(tmp_path, "toy.py", _extra(GOOD, {"LOSS": {"LAMBDA": 1.0, "T": 1.0}, "TRAINER.COOP": {"W": 8.0},
                                            "OPTIM": {"NAME": "adam"}}))
    _write(tmp_path, "toy2.py", _extra(GOOD.replace('"toy"', '"toy2"').replace('"Toy"', '"Toy2"')
                                       .replace('"TOY"', '"TOY2"'), {"LOSS": {"LAMBDA": 1.0}}))
    cfg = extend_cfg(get_cfg_default(), directory=str(tmp_path))
    assert dict(cfg.LOSS) == {"LAMBDA": 1.0, "T": 1.0} and cfg.TRAINER.COOP.W == 8.0
    assert cfg.OPTIM.NAME == "adam"  # an engine default left as it is (the declared default agrees)
    assert list(cfg.TRAINER.COOP) == ["W"]  # no CoOp declaration in this folder: the node is created
    # an official YAML setting these keys now merges unchanged
    yaml_file = tmp_path / "official.yaml"
    yaml_file.write_text("LOSS:\n  LAMBDA: 0.8\nTRAINER:\n  COOP:\n    W: 1.0\n")
    from engine.config import merge_from_file

    merge_from_file(cfg, str(yaml_file))
    assert cfg.LOSS.LAMBDA == 0.8 and cfg.TRAINER.COOP.W == 1.0


def test_extra_config_conflicts_are_one_line_errors_naming_the_files(tmp_path):
    other = GOOD.replace('"toy"', '"toy2"').replace('"Toy"', '"Toy2"').replace('"TOY"', '"TOY2"')
    _write(tmp_path, "a.py", _extra(GOOD, {"LOSS": {"LAMBDA": 1.0}}))
    _write(tmp_path, "b.py", _extra(other, {"LOSS": {"LAMBDA": 2.0}}))
    with pytest.raises(ValueError, match=r"LOSS\.LAMBDA = 2\.0 disagrees with 1\.0 declared in") as err:
        method_declarations(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "a.py") in message and str(tmp_path / "b.py") in message and "\n" not in message
    _write(tmp_path, "b.py", _extra(other, {"LOSS": {"LAMBDA": 1}}))  # int vs float: not the same default
    with pytest.raises(ValueError, match="disagrees"):
        method_declarations(str(tmp_path))
    os.remove(tmp_path / "b.py")
    for extra, match in (({"OPTIM": {"LR": 0.1}}, r"OPTIM\.LR = 0\.1 disagrees with the existing default 0\.0003"),
                         ({"TRAINER.TOY": {"ALPHA": 0.5}}, None),
                         ({"OPTIM.LR": {"X": 1}}, r"OPTIM\.LR is a config key, not a node")):
        _write(tmp_path, "a.py", _extra(GOOD, extra))
        if match is None:  # the method's own node: a declaration error
            with pytest.raises(ValueError, match="names the method's own node TRAINER.TOY") as err:
                method_declarations(str(tmp_path))
        else:
            with pytest.raises(ValueError, match=match) as err:
                extend_cfg(get_cfg_default(), directory=str(tmp_path))
        assert str(tmp_path / "a.py") in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("extra, message", [
    ([("LOSS", {})], r"METHOD\['extra_config'\] has the wrong type"),
    ({"loss": {"LAMBDA": 1.0}}, "dotted upper-case config node paths"),
    ({"LOSS..X": {"LAMBDA": 1.0}}, "dotted upper-case config node paths"),
    ({"LOSS": {}}, "must be a non-empty dict"),
    ({"LOSS": 1.0}, "must be a non-empty dict"),
    ({"LOSS": {"lambda": 1.0}}, "must map upper-case keys to plain defaults"),
    ({"LOSS": {"SUB": {"A": 1}}}, "must map upper-case keys to plain defaults"),
])
def test_bad_extra_config_is_a_one_line_error_naming_the_file(tmp_path, extra, message):
    _write(tmp_path, "toy.py", _extra(GOOD, extra))
    with pytest.raises(ValueError, match=message) as err:
        method_declarations(str(tmp_path))
    assert str(tmp_path / "toy.py") in str(err.value) and "\n" not in str(err.value)
