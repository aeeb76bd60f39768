"""Config defaults (Dassl keys + ours) and ``setup_cfg`` merge order and one-line errors."""
import argparse
import os
import re

import pytest

from engine.config import ConfigError, get_cfg_default, setup_cfg

SHARED_COMPAT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                             "reference", "ecosystem-compat.md")


def extend(cfg):
    from trainers.config import extend_cfg

    return extend_cfg(cfg)


def args(**kw):
    base = dict(root="", output_dir="", resume="", seed=None, source_domains=None, target_domains=None,
                transforms=None, config_file="", dataset_config_file="", trainer="", backbone="", head="",
                opts=[])
    base.update(kw)
    return argparse.Namespace(**base)


def lookup(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def test_dassl_defaults_and_additions():
    cfg = get_cfg_default()
    expected = {
        "OUTPUT_DIR": "./output", "RESUME": "", "SEED": -1, "USE_CUDA": True, "VERBOSE": True,
        "INPUT.SIZE": (224, 224), "INPUT.INTERPOLATION": "bilinear", "INPUT.TRANSFORMS": (),
        "INPUT.PIXEL_MEAN": [0.485, 0.456, 0.406], "INPUT.PIXEL_STD": [0.229, 0.224, 0.225],
        "INPUT.RRCROP_SCALE": (0.08, 1.0), "INPUT.CROP_PADDING": 4, "INPUT.CUTOUT_N": 1, "INPUT.CUTOUT_LEN": 16,
        "INPUT.GN_MEAN": 0.0, "INPUT.GN_STD": 0.15, "INPUT.RANDAUGMENT_N": 2, "INPUT.RANDAUGMENT_M": 10,
        "INPUT.COLORJITTER_B": 0.4, "INPUT.COLORJITTER_H": 0.1, "INPUT.RGS_P": 0.2, "INPUT.GB_P": 0.5,
        "INPUT.GB_K": 21, "INPUT.NO_TRANSFORM": False,
        "DATASET.ROOT": "", "DATASET.NAME": "", "DATASET.NUM_SHOTS": -1, "DATASET.SOURCE_DOMAINS": (),
        "DATASET.VAL_PERCENT": 0.1, "DATASET.NUM_LABELED": -1,
        "DATALOADER.NUM_WORKERS": 4, "DATALOADER.K_TRANSFORMS": 1, "DATALOADER.RETURN_IMG0": False,
        "DATALOADER.TRAIN_X.SAMPLER": "RandomSampler", "DATALOADER.TRAIN_X.BATCH_SIZE": 32,
        "DATALOADER.TRAIN_U.SAME_AS_X": True, "DATALOADER.TEST.SAMPLER": "SequentialSampler",
        "DATALOADER.TEST.BATCH_SIZE": 32,
        "MODEL.INIT_WEIGHTS": "", "MODEL.BACKBONE.NAME": "", "MODEL.BACKBONE.PRETRAINED": True,
        "MODEL.HEAD.NAME": "",
        "OPTIM.NAME": "adam", "OPTIM.LR": 0.0003, "OPTIM.WEIGHT_DECAY": 5e-4, "OPTIM.MOMENTUM": 0.9,
        "OPTIM.SGD_DAMPNING": 0, "OPTIM.SGD_NESTEROV": False, "OPTIM.RMSPROP_ALPHA": 0.99,
        "OPTIM.ADAM_BETA1": 0.9, "OPTIM.ADAM_BETA2": 0.999, "OPTIM.STAGED_LR": False, "OPTIM.NEW_LAYERS": (),
        "OPTIM.BASE_LR_MULT": 0.1, "OPTIM.LR_SCHEDULER": "single_step", "OPTIM.STEPSIZE": (-1,),
        "OPTIM.GAMMA": 0.1, "OPTIM.MAX_EPOCH": 10, "OPTIM.WARMUP_EPOCH": -1, "OPTIM.WARMUP_TYPE": "linear",
        "OPTIM.WARMUP_CONS_LR": 1e-5, "OPTIM.WARMUP_MIN_LR": 1e-5, "OPTIM.WARMUP_RECOUNT": True,
        "TRAIN.CHECKPOINT_FREQ": 0, "TRAIN.PRINT_FREQ": 10, "TRAIN.COUNT_ITER": "train_x",
        "TEST.EVALUATOR": "Classification", "TEST.PER_CLASS_RESULT": False, "TEST.COMPUTE_CMAT": False,
        "TEST.NO_TEST": False, "TEST.SPLIT": "test", "TEST.FINAL_MODEL": "last_step", "TRAINER.NAME": "",
        # our additions (docs/CONFIG.md)
        "DATASET.SUBSAMPLE_CLASSES": "all", "DATASET.TEMPLATE": "", "DATASET.CSV_FILE": "",
        "DATALOADER.SKIP_BAD_IMAGES": False, "MODEL.BACKBONE.PATH": "", "MODEL.BACKBONE.RANDOM_INIT": False,
        "TEST.SAVE_PREDICTIONS": False,
    }
    for key, value in expected.items():
        assert lookup(cfg, key) == value, key
        assert type(lookup(cfg, key)) is type(value), key
    assert "PREC" not in cfg.TRAINER  # PREC lives in each trainer node
    get_cfg_default().OPTIM.LR = 1.0
    assert get_cfg_default().OPTIM.LR == 0.0003  # a fresh copy each time


def test_every_key_of_the_compat_table_exists():
    """Every backticked key of the compat note's section 1.2 table exists in our defaults (+ extend_cfg)."""
    if not os.path.isfile(SHARED_COMPAT):
        pytest.skip("../shared/reference/ecosystem-compat.md is absent")
    text = open(SHARED_COMPAT, encoding="utf-8").read()
    section = text.split("### 1.2")[1].split("**Trainer nodes")[0]
    keys = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        prefix = ""
        for token in re.findall(r"`([A-Z][A-Z0-9_./]*)`", line.split("|")[1]):
            if "." in token:
                prefix = token.rsplit(".", 1)[0] + "."
                name = token
            else:
                name = prefix + token
            if name.endswith("1/2"):  # OPTIM.ADAM_BETA1/2
                keys.update({name[:-2], name[:-3] + "2"})
            else:
                keys.add(name)
    assert len(keys) > 40
    cfg = extend(get_cfg_default())
    missing = []
    for key in sorted(keys):
        try:
            lookup(cfg, key)
        except KeyError:
            missing.append(key)
    assert not missing


def test_merge_order_defaults_extend_dataset_method_flags_opts(tmp_path):
    ds = tmp_path / "ds.yaml"
    ds.write_text("DATASET:\n  NAME: Caltech101\nOUTPUT_DIR: from_dataset\nSEED: 5\nOPTIM:\n  LR: 0.5\n")
    method = tmp_path / "m.yaml"
    method.write_text(
        "OUTPUT_DIR: from_method\nOPTIM:\n  LR: 0.0035\n  MAX_EPOCH: 5\nTRAINER:\n  COMMA:\n    N_CTX: 4\n"
        "INPUT:\n  SIZE: (32, 32)\n  TRANSFORMS: [\"random_flip\"]\n"
    )
    cfg = setup_cfg(args(dataset_config_file=str(ds), config_file=str(method)), extend=extend)
    assert cfg.DATASET.NAME == "Caltech101"  # dataset YAML
    assert cfg.OUTPUT_DIR == "from_method"  # method YAML beats dataset YAML
    assert cfg.OPTIM.LR == 0.0035 and cfg.OPTIM.MAX_EPOCH == 5
    assert cfg.TRAINER.COMMA.N_CTX == 4  # a key that only exists after extend_cfg
    assert cfg.INPUT.SIZE == (32, 32) and cfg.INPUT.TRANSFORMS == ("random_flip",)
    assert cfg.SEED == 5  # no --seed: the YAML value stays
    assert cfg.is_frozen()

    cfg = setup_cfg(args(dataset_config_file=str(ds), config_file=str(method), output_dir="from_flag",
                         seed=0, root="/data", trainer="COMMA", backbone="ViT-B/16", head="h",
                         transforms=["normalize"], source_domains=["a"], target_domains=["b"], resume="r"),
                    extend=extend)
    assert cfg.OUTPUT_DIR == "from_flag" and cfg.SEED == 0  # --seed 0 counts
    assert cfg.DATASET.ROOT == "/data" and cfg.TRAINER.NAME == "COMMA" and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"
    assert cfg.MODEL.HEAD.NAME == "h" and list(cfg.INPUT.TRANSFORMS) == ["normalize"] and cfg.RESUME == "r"
    assert list(cfg.DATASET.SOURCE_DOMAINS) == ["a"] and list(cfg.DATASET.TARGET_DOMAINS) == ["b"]

    cfg = setup_cfg(args(dataset_config_file=str(ds), config_file=str(method), output_dir="from_flag", seed=0,
                         opts=["OUTPUT_DIR", "from_opts", "SEED", "7", "DATASET.SUBSAMPLE_CLASSES", "base",
                               "DATASET.NUM_SHOTS", "16", "OPTIM.LR", "1", "TRAINER.COMMA.PREC", "fp32"]),
                    extend=extend)
    assert cfg.OUTPUT_DIR == "from_opts" and cfg.SEED == 7  # opts beat flags
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base" and cfg.DATASET.NUM_SHOTS == 16
    assert cfg.OPTIM.LR == 1.0 and isinstance(cfg.OPTIM.LR, float)  # int -> float
    assert cfg.TRAINER.COMMA.PREC == "fp32"


def err(**kw):
    with pytest.raises(ConfigError) as exc:
        setup_cfg(args(**kw), extend=extend)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_unknown_keys_name_the_key_and_source(tmp_path):
    msg = err(opts=["OPTIM.LRR", "0.1"])
    assert "unknown config key OPTIM.LRR" in msg and "command-line" in msg and 'did you mean "OPTIM.LR"' in msg
    bad = tmp_path / "bad.yaml"
    bad.write_text("TRAINER:\n  COMMA:\n    N_CTXX: 2\n")
    msg = err(config_file=str(bad))
    assert "TRAINER.COMMA.N_CTXX" in msg and str(bad) in msg
    assert "unknown config key NOPE" in err(opts=["NOPE", "1"])
    assert "group of keys" in err(opts=["OPTIM", "1"])


def test_bad_values_types_files(tmp_path):
    msg = err(opts=["OPTIM.LR", "fast"])
    assert "OPTIM.LR" in msg and "float" in msg and "'fast'" in msg
    assert "USE_CUDA" in err(opts=["USE_CUDA", "1"])
    assert "INPUT.SIZE" in err(opts=["INPUT.SIZE", "224"])
    assert "DATASET.NUM_SHOTS" in err(opts=["DATASET.NUM_SHOTS", "1.5"])
    assert "no value" in err(opts=["DATASET.NUM_SHOTS"])
    assert "config file not found" in err(config_file=str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("OPTIM:\n  LR: [0.1\n")
    assert "malformed YAML" in err(config_file=str(broken)) and str(broken) in err(config_file=str(broken))
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    assert "mapping" in err(dataset_config_file=str(listy))
    typed = tmp_path / "typed.yaml"
    typed.write_text("OPTIM:\n  MAX_EPOCH: five\n")
    msg = err(config_file=str(typed))
    assert "OPTIM.MAX_EPOCH" in msg and str(typed) in msg


def test_choice_validation():
    assert "OPTIM.LR_SCHEDULER" in err(opts=["OPTIM.LR_SCHEDULER", "poly"])
    assert "TEST.FINAL_MODEL" in err(opts=["TEST.FINAL_MODEL", "best"])
    assert "DATASET.SUBSAMPLE_CLASSES" in err(opts=["DATASET.SUBSAMPLE_CLASSES", "novel"])
    msg = err(opts=["TRAINER.MAPLE.PREC", "fp8"])
    assert "TRAINER.MAPLE.PREC" in msg and "fp32, fp16, bf16, amp" in msg


def test_string_keys_accept_numbers_and_frozen():
    cfg = setup_cfg(args(opts=["DATASET.NAME", "101", "TRAINER.COOP.CTX_INIT", "a photo of a"]), extend=extend)
    assert cfg.DATASET.NAME == "101" and cfg.TRAINER.COOP.CTX_INIT == "a photo of a"
    with pytest.raises(AttributeError):
        cfg.SEED = 3


def test_null_replaces_any_value_as_in_yacs(tmp_path):
    yaml = tmp_path / "m.yaml"
    yaml.write_text("MODEL:\n  INIT_WEIGHTS: null\nDATASET:\n  TEMPLATE: null\n")
    cfg = setup_cfg(args(config_file=str(yaml), opts=["OPTIM.STEPSIZE", "None"]), extend=extend)
    assert cfg.MODEL.INIT_WEIGHTS is None and cfg.DATASET.TEMPLATE is None and cfg.OPTIM.STEPSIZE is None
    with pytest.raises(ConfigError, match="OPTIM.LR"):  # a wrong type is still an error
        setup_cfg(args(opts=["OPTIM.LR", "fast"]), extend=extend)
