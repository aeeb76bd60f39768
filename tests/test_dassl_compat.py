"""The Dassl compatibility package (compat/dassl_shim/dassl): API surface and signatures against Dassl
0.6.3 and its 0.5.0 fork, isolation (not importable by default), ``Datum`` pickles both ways.

The package is only ever imported in child interpreters, so this process's ``sys.modules`` never holds a
``dassl`` (ours or a real one).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from fixtures_dassl import REPO_ROOT, RESEARCH_REPO, SHIM_DIR, run_json

# The 22 names the official repos import (CoOp, MaPLe, COMMA, KgCoOp, PromptSRC, ProGrad, TCP) with
# their Dassl 0.6.3 signatures, as read from KaiyangZhou/Dassl.pytorch v0.6.3 (c61a1b5). ``None``: a
# registry object. A class lists its constructor's parameters (without self).
DASSL_063 = {
    "dassl.engine.TRAINER_REGISTRY": None,
    "dassl.engine.TrainerX": "(cfg)",
    "dassl.engine.build_trainer": "(cfg)",
    "dassl.config.get_cfg_default": "()",
    "dassl.optim.build_optimizer": "(model, optim_cfg, param_groups=None)",
    "dassl.optim.build_lr_scheduler": "(optimizer, optim_cfg)",
    "dassl.data.datasets.DATASET_REGISTRY": None,
    "dassl.data.datasets.Datum": "(impath='', label=0, domain=0, classname='')",
    "dassl.data.datasets.DatasetBase": "(train_x=None, train_u=None, val=None, test=None)",
    "dassl.metrics.compute_accuracy": "(output, target, topk=(1,))",
    "dassl.utils.load_checkpoint": "(fpath)",
    "dassl.utils.load_pretrained_weights": "(model, weight_path)",
    "dassl.utils.setup_logger": "(output=None)",
    "dassl.utils.set_random_seed": "(seed)",
    "dassl.utils.collect_env_info": "()",
    "dassl.utils.mkdir_if_missing": "(dirname)",
    "dassl.utils.listdir_nohidden": "(path, sort=False)",
    "dassl.utils.read_json": "(fpath)",
    "dassl.utils.write_json": "(obj, fpath)",
    "dassl.utils.check_isfile": "(fpath)",
    "dassl.data.DatasetWrapper": "(cfg, data_source, transform=None, is_train=False)",
    "dassl.data.transforms.build_transform": "(cfg, is_train=True, choices=None)",
}

# Dassl 0.6.3 TrainerX methods the official trainers call or override (dassl/engine/trainer.py).
TRAINER_METHODS_063 = {
    "register_model": "(name='model', model=None, optim=None, sched=None)",
    "get_model_names": "(names=None)",
    "save_model": "(epoch, directory, is_best=False, val_result=None, model_name='')",
    "resume_model_if_exist": "(directory)",
    "load_model": "(directory, epoch=None)",
    "set_model_mode": "(mode='train', names=None)",
    "update_lr": "(names=None)",
    "detect_anomaly": "(loss)",
    "init_writer": "(log_dir)",
    "close_writer": "()",
    "write_scalar": "(tag, scalar_value, global_step=None)",
    "train": "()",
    "before_train": "()",
    "after_train": "()",
    "before_epoch": "()",
    "after_epoch": "()",
    "run_epoch": "()",
    "test": "(split=None)",
    "parse_batch_train": "(batch)",
    "parse_batch_test": "(batch)",
    "forward_backward": "(batch)",
    "model_inference": "(input)",
    "model_zero_grad": "(names=None)",
    "model_backward": "(loss)",
    "model_update": "(names=None)",
    "model_backward_and_update": "(loss, names=None)",
    "check_cfg": "(cfg)",
    "build_data_loader": "()",
    "build_model": "()",
    "get_current_lr": "(names=None)",
}

# The Dassl 0.5.0 fork bundled with ProGrad, KgCoOp and TCP (Dassl.ProGrad.pytorch): two extra trainer
# methods and its older signatures, which the package must also accept.
FORK_050_METHODS = {
    "prograd_backward_and_update": "(loss_a, loss_b, lambda_=1, names=None)",
    "output_test": "(split=None)",
    "save_model": "(epoch, directory, is_best=False, model_name='')",
}
FORK_050_FUNCTIONS = {"dassl.optim.build_optimizer": "(model, optim_cfg)"}
FORK_050_KEYWORD_ONLY = {"save_model"}  # the fork calls it as save_model(epoch, dir, model_name=...)

def _parse(sig):
    """``"(a, b=1)"`` -> ``[(name, default repr or None)]`` via a throwaway function."""
    namespace = {}
    exec(f"def f{sig}: pass", namespace)
    import inspect

    return [(p.name, None if p.default is inspect.Parameter.empty else repr(p.default))
            for p in inspect.signature(namespace["f"]).parameters.values()]


def _accepts_by_keyword(expected, actual):
    """The required parameters in order, and every optional one by name with its default (keyword calls)."""
    exp, act = _parse(expected), dict(_parse(actual))
    required = [n for n, d in exp if d is None]
    return (list(act)[:len(required)] == required
            and all(n in act and act[n] == d for n, d in exp)
            and all(d is not None for n, d in act.items() if n not in dict(exp)))


def _accepts(expected, actual):
    """Every expected parameter, in order, same name and default; extras only after them and optional."""
    exp, act = _parse(expected), _parse(actual)
    if act[:len(exp)] != exp:
        return False
    return all(default is not None or name.startswith("*") for name, default in act[len(exp):])


@pytest.fixture(scope="module")
def surface():
    """Signatures of the package's names and TrainerX methods, read in a child interpreter."""
    code = r"""
import importlib, inspect, json
names = %s
methods = %s
out = {"names": {}, "methods": {}, "files": {}}
for full in names:
    mod, attr = full.rsplit(".", 1)
    obj = getattr(importlib.import_module(mod), attr)
    out["files"][full] = getattr(importlib.import_module(mod), "__file__", "")
    if callable(obj) and not hasattr(obj, "registered_names"):
        target = obj.__init__ if inspect.isclass(obj) else obj
        sig = inspect.signature(target)
        params = [p for p in sig.parameters.values() if p.name != "self"]
        out["names"][full] = str(sig.replace(parameters=params))
    else:
        out["names"][full] = None if hasattr(obj, "registered_names") else repr(obj)
from dassl.engine import TrainerX
for name in methods:
    fn = getattr(TrainerX, name, None)
    if fn is None:
        out["methods"][name] = "MISSING"
        continue
    sig = inspect.signature(fn)
    out["methods"][name] = str(sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "self"]))
import dassl, dassl.utils, dassl.engine
out["missing"] = []
for mod, name in ((dassl.utils, "download_url"), (dassl.engine, "TrainerXU"), (dassl, "modeling")):
    try:
        getattr(mod, name)
    except AttributeError as e:
        out["missing"].append(str(e))
print(json.dumps(out))
""" % (repr(list(DASSL_063)), repr(sorted(set(TRAINER_METHODS_063) | set(FORK_050_METHODS))))
    return run_json(code)


@pytest.mark.slow
def test_all_22_names_import_from_the_package(surface):
    assert len(DASSL_063) == 22
    assert set(surface["names"]) == set(DASSL_063)
    for full, path in surface["files"].items():
        assert os.path.realpath(path).startswith(os.path.realpath(SHIM_DIR) + os.sep), (full, path)


@pytest.mark.slow
@pytest.mark.parametrize("full", sorted(DASSL_063))
def test_name_signature_accepts_dassl_063_calls(surface, full):
    expected, actual = DASSL_063[full], surface["names"][full]
    if expected is None:
        assert actual is None, f"{full} should be a registry"
    else:
        assert _accepts(expected, actual), f"{full}: Dassl 0.6.3 {expected}, package {actual}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRAINER_METHODS_063))
def test_trainer_method_accepts_dassl_063_calls(surface, name):
    actual = surface["methods"][name]
    assert actual != "MISSING", name
    expected = TRAINER_METHODS_063[name]
    assert _accepts(expected, actual), f"TrainerX.{name}: Dassl {expected}, package {actual}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FORK_050_METHODS))
def test_trainer_method_accepts_fork_050_calls(surface, name):
    actual = surface["methods"][name]
    assert actual != "MISSING", name
    check = _accepts_by_keyword if name in FORK_050_KEYWORD_ONLY else _accepts
    assert check(FORK_050_METHODS[name], actual), f"TrainerX.{name}: fork {FORK_050_METHODS[name]}, package {actual}"


@pytest.mark.slow
def test_fork_050_function_signatures(surface):
    for full, expected in FORK_050_FUNCTIONS.items():
        assert _accepts(expected, surface["names"][full]), (full, surface["names"][full])


def test_research_repo_imports_exactly_the_22_names():
    """The test suite's research repo uses the same Dassl surface as the seven official repos."""
    import ast

    used = set()
    for folder, _, files in os.walk(RESEARCH_REPO):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dassl"):
                        used.update(f"{node.module}.{alias.name}" for alias in node.names)
    assert used == set(DASSL_063)


@pytest.mark.slow
def test_missing_names_fail_in_one_line_naming_them(surface):
    assert surface["missing"] == [
        f"{n} is not provided by the harness's Dassl compatibility package (dassl 0.6.3+harness); "
        "see docs/DASSL_REPOS.md" for n in ("dassl.utils.download_url", "dassl.engine.TrainerXU", "dassl.modeling")]


def test_config_defaults_are_the_engine_keys_plus_dassls():
    data = run_json(
        "import json\nfrom dassl.config import get_cfg_default\nfrom engine.config import get_cfg_default as eng\n"
        "from engine.runs.record import flatten_cfg\n"
        "a, b = flatten_cfg(get_cfg_default()), flatten_cfg(eng())\n"
        "print(json.dumps({'extra': sorted(set(a) - set(b)), 'lost': sorted(set(b) - set(a)),"
        " 'same': all(a[k] == b[k] for k in b), 'version': a['VERSION'],"
        " 'fixmatch': a['TRAINER.FIXMATCH.CONF_THRE']}))")
    assert data["lost"] == [] and data["same"]
    # Dassl 0.6.3's 135 keys minus the shared ones, plus the package's OPTIM.ADAM_EPS
    assert len(data["extra"]) == 46 and "VERSION" in data["extra"] and "OPTIM.ADAM_EPS" in data["extra"]
    assert data["version"] == 1 and data["fixmatch"] == 0.95


def test_adam_eps_key_replaces_the_readme_edit_of_dassls_optimiser():
    """``OPTIM.ADAM_EPS`` sets the Adam family's eps (TCP's README edits Dassl to 1e-3); default 1e-8, as Dassl.

    In fp16 an eps of 1e-8 rounds to 0: a gradient whose square underflows makes the first Adam step
    divide by zero (the non-finite loss the README warns about); 1e-3 keeps it finite.
    """
    data = run_json(
        "import json, torch\nfrom dassl.config import get_cfg_default\nfrom dassl.optim import build_optimizer\n"
        "out = {}\n"
        "for name, eps in (('adam', None), ('adam', 1e-3), ('adamw', 1e-3), ('sgd', 1e-3)):\n"
        "    cfg = get_cfg_default()\n"
        "    cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.WEIGHT_DECAY = name, 0.002, 0.0\n"
        "    if eps is not None:\n"
        "        cfg.OPTIM.ADAM_EPS = eps\n"
        "    p = torch.nn.Parameter(torch.full((4,), 0.5, dtype=torch.float16))\n"
        "    opt = build_optimizer([p], cfg.OPTIM)\n"
        "    p.grad = torch.full((4,), 1e-4, dtype=torch.float16)\n"
        "    opt.step()\n"
        "    out[f'{name} {eps}'] = [opt.param_groups[0].get('eps'), bool(torch.isfinite(p).all())]\n"
        "print(json.dumps(out))")
    assert data == {"adam None": [1e-8, False], "adam 0.001": [1e-3, True], "adamw 0.001": [1e-3, True],
                    "sgd 0.001": [None, True]}


def test_package_is_not_importable_by_default():
    """Outside --dassl-repo mode no ``dassl`` comes from this repository (a real one is never shadowed)."""
    code = ("import importlib.util, json, os, sys\n"
            f"sys.path[:0] = [{REPO_ROOT!r}, {os.path.join(REPO_ROOT, 'tests')!r}]\n"
            "import train\n"
            "spec = importlib.util.find_spec('dassl')\n"
            "print(json.dumps(spec.origin if spec else None))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.returncode == 0, out.stderr
    origin = json.loads(out.stdout.strip().splitlines()[-1])
    assert origin is None or not os.path.realpath(origin).startswith(os.path.realpath(REPO_ROOT) + os.sep)
    assert importlib.util.find_spec("compat.dassl_shim.dassl") is None or "dassl" not in sys.modules


# ---------------------------------------------------------------------------------------------- Datum pickles
# Dassl 0.6.3's Datum (dassl/data/datasets/base_dataset.py) minus its file check, installed as a stub at
# Dassl's module path in a child interpreter that has no harness package on its path.
_DASSL_STUB = r"""
import sys, types
for name in ("dassl", "dassl.data", "dassl.data.datasets", "dassl.data.datasets.base_dataset"):
    sys.modules[name] = types.ModuleType(name)
class Datum:
    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str)
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname
    impath = property(lambda self: self._impath)
    label = property(lambda self: self._label)
    domain = property(lambda self: self._domain)
    classname = property(lambda self: self._classname)
Datum.__module__ = "dassl.data.datasets.base_dataset"
sys.modules["dassl.data.datasets.base_dataset"].Datum = Datum
"""

_ITEMS = [("/data/pets/images/Abyssinian_1.jpg", 0, 0, "abyssinian"), ("/data/pets/images/pug_2.jpg", 3, 1, "pug")]


def _stub_run(code):
    out = subprocess.run([sys.executable, "-c", _DASSL_STUB + code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd="/")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


PROTOCOLS = (2, 4, 5)


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    """Dassl stub writes -> package reads/converts/writes -> Dassl stub and the engine importer read back.

    One child per side (the package side imports torch once). The plain ``pickle.load`` calls are the Dassl
    format under test and only read files these children wrote into the test's own temporary folder; the
    harness itself reads Dassl pickles only through its restricted importer (checked below)."""
    tmp = tmp_path_factory.mktemp("datum")
    dassl_file, shim_file, shim_file2 = str(tmp / "dassl.pkl"), str(tmp / "shim.pkl"), str(tmp / "shim2.pkl")
    make = f"items = [Datum(*t) for t in {_ITEMS!r}]\n"
    dassl = _stub_run(
        "import json, pickle\n" + make +
        f"pickle.dump({{'train': items, 'val': items[:1]}}, open({dassl_file!r}, 'wb'))\n"
        f"print(json.dumps({{p: pickle.dumps({{'train': items}}, protocol=p).hex() for p in {PROTOCOLS!r}}}))")
    shim = run_json(
        "import json, pickle\nfrom dassl.data.datasets import Datum\n"
        "from engine.data import Datum as EngineDatum\n" + make +
        "out = {'bytes': {p: pickle.dumps({'train': items}, protocol=p).hex() for p in %r}}\n" % (PROTOCOLS,) +
        f"d = pickle.load(open({dassl_file!r}, 'rb'))\n"
        "out['types'] = sorted({type(x).__module__ + '.' + type(x).__qualname__ for x in d['train'] + d['val']})\n"
        "out['read'] = [[x.impath, x.label, x.domain, x.classname] for x in d['train'] + d['val']]\n"
        "eng = [x.to_engine() for x in d['train']]\n"
        "out['engine_types'] = sorted({type(e).__module__ + '.' + type(e).__qualname__ for e in eng})\n"
        "back = [Datum.from_engine(e) for e in eng]\n"
        f"pickle.dump({{'train': back}}, open({shim_file!r}, 'wb'))\n"
        f"pickle.dump({{'train': items}}, open({shim_file2!r}, 'wb'))\n"
        "obj = Datum.__new__(Datum)\n"
        "obj.__setstate__((None, {'_impath': '/b.jpg', '_label': 2, '_domain': 0, '_classname': 'dog'}))\n"
        "out['slotted'] = [obj.impath, obj.label, obj.domain, obj.classname]\n"
        "print(json.dumps(out))")
    reread = _stub_run("import json, pickle\n"
                       f"d = pickle.load(open({shim_file!r}, 'rb'))\n"
                       "assert all(type(x) is Datum for x in d['train'])\n"
                       "print(json.dumps([[x.impath, x.label, x.domain, x.classname] for x in d['train']]))")
    return {"dassl": dassl, "shim": shim, "reread": reread, "shim_file2": shim_file2}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_datum_pickles_byte_identical_to_dassls(roundtrip, protocol):
    assert roundtrip["shim"]["bytes"][str(protocol)] == roundtrip["dassl"][str(protocol)]


@pytest.mark.slow
def test_dassl_written_pickle_loads_through_the_package_and_back(roundtrip):
    shim = roundtrip["shim"]
    assert shim["types"] == ["dassl.data.datasets.base_dataset.Datum"]
    assert shim["read"] == [list(t) for t in _ITEMS + _ITEMS[:1]]
    assert shim["engine_types"] == ["engine.data.datum.Datum"]
    assert roundtrip["reread"] == [list(t) for t in _ITEMS]  # converted to the engine's Datum and back


@pytest.mark.slow
def test_package_written_pickle_reads_with_the_engines_restricted_importer(roundtrip):
    from engine.data.legacy_fewshot import read_dassl_pickle

    data = read_dassl_pickle(roundtrip["shim_file2"])
    assert [[d.state["_impath"], d.state["_label"], d.state["_domain"], d.state["_classname"]]
            for d in data["train"]] == [list(t) for t in _ITEMS]


@pytest.mark.slow
def test_slotted_state_loads_into_the_package_datum(roundtrip):
    """A ``(None, slots)`` state (a slotted writer at Dassl's path) also unpickles."""
    assert roundtrip["shim"]["slotted"] == ["/b.jpg", 2, 0, "dog"]


def test_shim_dassl_is_never_in_this_process():
    assert "dassl" not in sys.modules


# ---------------------------------------------------------------------------------------------- runner helpers
def test_runner_argument_split_and_mode_detection():
    from compat.dassl_runner import RepoError, is_dassl_mode, split_argv

    assert is_dassl_mode(["--dassl-repo", "r", "--", "--trainer", "X"])
    assert is_dassl_mode(["--dassl-repo=r", "--"])
    assert not is_dassl_mode(["--trainer", "X", "--", "--dassl-repo", "r"])  # after -- it is the repo's argument
    assert not is_dassl_mode(["--root", "data", "OPTIM.MAX_EPOCH", "2"])
    assert split_argv(["--dassl-repo", "r", "--", "--seed", "1", "--", "x"]) == (["--dassl-repo", "r"],
                                                                                 ["--seed", "1", "--", "x"])
    with pytest.raises(RepoError, match="the -- is required"):
        split_argv(["--dassl-repo", "r"])


def test_one_gpu_is_pinned_from_a_list(monkeypatch):
    from compat.dassl_runner import pin_one_gpu

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert pin_one_gpu() == "2" and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert pin_one_gpu() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_clip_weights_table_accepts_any_architecture_name():
    from compat.dassl_runner import AnyArchitecture

    table = AnyArchitecture({"ViT-B/16": "https://x/ViT-B-16.pt"})
    assert table["ViT-B/16"] == "https://x/ViT-B-16.pt"
    assert table["ViT-Tiny/16"] == "harness-clip-weights:ViT-Tiny/16" and "RN50" in table
