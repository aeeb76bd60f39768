"""``METHOD["extra_config"]``: config keys outside the method's own ``TRAINER.<node>`` (a top-level
``LOSS`` node, another method's node), created by ``extend_cfg`` with their defaults; conflicts are
one-line errors naming the files; the field is validated like the others."""
import os

import pytest

from engine.config import get_cfg_default
from trainers.config import extend_cfg, method_declarations


def _method(key, extra, order=5):
    return (f'METHOD = {{"key": "{key}", "trainer": "{key.title()}", "node": "{key.upper()}", "config": '
            f'{{"PREC": "fp32", "UPSTREAM_NUMERICS": False, "ALPHA": 0.5}}, "b2n_cfg": "a", "xd_cfg": "b", '
            f'"order": {order}, "extra_config": {extra!r}}}\n')


def _write(folder, name, text):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write(text)


def test_extra_nodes_and_keys_are_created_with_their_defaults(tmp_path):
    _write(tmp_path, "toy.py", _method("toy", {"LOSS": {"LAMBDA": 1.0, "T": 1.0}, "TRAINER.OTHER": {"BETA": 2}}))
    other = {"LOSS": {"T": 1.0, "NAME": ""}, "DATASET": {"SUBSAMPLE_CLASSES": "all"}, "MODEL.EXTRA.DEEP": {"ON": True}}
    _write(tmp_path, "other.py", _method("other", other, order=6))
    cfg = extend_cfg(get_cfg_default(), directory=str(tmp_path))
    assert dict(cfg.LOSS) == {"LAMBDA": 1.0, "T": 1.0, "NAME": ""}
    assert dict(cfg.TRAINER.OTHER) == {"PREC": "fp32", "UPSTREAM_NUMERICS": False, "ALPHA": 0.5, "BETA": 2}
    assert cfg.MODEL.EXTRA.DEEP.ON is True and cfg.DATASET.SUBSAMPLE_CLASSES == "all"
    assert method_declarations(str(tmp_path))[0]["extra_config"]["LOSS"] == {"LAMBDA": 1.0, "T": 1.0}


def test_two_methods_with_different_defaults_for_one_key_is_an_error_naming_both(tmp_path):
    _write(tmp_path, "toy.py", _method("toy", {"LOSS": {"T": 1.0}}))
    _write(tmp_path, "other.py", _method("other", {"LOSS": {"T": 2.0}}, order=6))
    clash = r"extra_config'\] LOSS\.T = [12]\.0 disagrees with [12]\.0 declared in"
    with pytest.raises(ValueError, match=clash) as err:
        method_declarations(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "other.py") in message and str(tmp_path / "toy.py") in message and "\n" not in message
    _write(tmp_path, "other.py", _method("other", {"LOSS": {"T": 1}}, order=6))  # 1 is not 1.0: yacs types differ
    with pytest.raises(ValueError, match="disagrees with"):
        method_declarations(str(tmp_path))


@pytest.mark.parametrize("extra, message", [
    ({"DATASET": {"SUBSAMPLE_CLASSES": "base"}}, r"SUBSAMPLE_CLASSES = 'base' disagrees with the existing default"),
    ({"OPTIM": {"LR": 1}}, r"OPTIM\.LR = 1 disagrees with the existing default"),
    ({"OPTIM.LR": {"X": 1}}, r"OPTIM\.LR is a config key, not a node"),
])
def test_an_existing_key_with_another_default_is_an_error(tmp_path, extra, message):
    _write(tmp_path, "toy.py", _method("toy", extra))
    with pytest.raises(ValueError, match=message) as err:
        extend_cfg(get_cfg_default(), directory=str(tmp_path))
    assert str(tmp_path / "toy.py") in str(err.value)


@pytest.mark.parametrize("extra, message", [
    ({"LOSS..X": {"A": 1}}, "must be dotted upper-case config node paths"),
    ({"TRAINER.TOY": {"A": 1}}, "names the method's own node"),
    ({"LOSS": {}}, "must be a non-empty dict of KEY: default"),
    ({"LOSS": {"1A": 1}}, "must map upper-case keys to plain defaults"),
    ({"LOSS": {"SUB": {"A": 1}}}, "must map upper-case keys to plain defaults"),
    ([("LOSS", {"A": 1})], r"METHOD\['extra_config'\] has the wrong type"),
])
def test_bad_extra_config_is_a_one_line_error_naming_the_file(tmp_path, extra, message):
    _write(tmp_path, "toy.py", _method("toy", extra))
    with pytest.raises(ValueError, match=message) as err:
        method_declarations(str(tmp_path))
    assert str(tmp_path / "toy.py") in str(err.value) and "\n" not in str(err.value)
