"""Method declarations and the trainer config nodes derived from them (``extend_cfg``).

Every method module ``trainers/<name>.py`` declares its method once, in a module-level literal::

    METHOD = {
        "key": "kgcoop",                 # short name: scripts/<key>/, --methods, sweep tables
        "trainer": "KgCoOp",             # registered trainer class name (--trainer, output folder)
        "node": "KGCOOP",                # config node TRAINER.<node>
        "config": {"N_CTX": 16, ...,     # the node's keys and defaults (must hold PREC and
                   "PREC": "fp16",       #   UPSTREAM_NUMERICS)
                   "UPSTREAM_NUMERICS": False},
        "checkpoint": "prompt_learner",  # registered model name = checkpoint folder; None: zero-shot
        "b2n_cfg": "vit_b16_ep100_ctxv1",  # configs/trainers/<config_dir>/<b2n_cfg>.yaml (base-to-novel)
        "xd_cfg": "vit_b16_ep100_ctxv1",   # cross-dataset / domain-generalisation training config
        "order": 25,                     # position in --methods all and the result tables
        # optional: "config_dir" (default: trainer), "b2n_cfg_per_dataset" ({dataset: cfg}),
        #           "prec" (official precision; default config["PREC"]), "aliases" (()),
        #           "zero_shot" (False), "title" (table row name; default trainer),
        #           few-shot protocol config: "fewshot_cfg" (default: b2n_cfg),
        #           "fewshot_cfg_per_shots" ({K: cfg}), "fewshot_cfg_per_dataset" ({dataset: cfg}),
        #           "extra_config" ({"DOTTED.NODE.PATH": {"KEY": default, ...}, ...}: config keys
        #           outside TRAINER.<node> that the official YAMLs or scripts set, e.g.
        #           {"LOSS": {"LAMBDA": 1.0}} or {"TRAINER.COOP": {"W": 8.0}})
    }

The literal is read with :mod:`ast` (no import, no torch), so the torch-free tools (the sweep
planner, run records) and ``extend_cfg`` see exactly what the trainer class sees
(``trainers.base.register_method(METHOD)`` sets the class's ``CFG_NODE`` and ``MODEL_NAME`` from it).
``extend_cfg`` adds one node per declared ``node`` (merged after Dassl's defaults and before any
YAML file, so the official method YAMLs merge unchanged: yacs rejects keys that do not exist yet).
``UPSTREAM_NUMERICS`` (every node, default False): True reproduces the official code's arithmetic
under ``PREC fp16`` (docs/METHODS.md lists every case).

``extra_config``: after the method nodes, ``extend_cfg`` creates each missing node on the path and
each missing key with its default, so an official YAML that sets e.g. ``LOSS.LAMBDA`` or
``TRAINER.COOP.W`` merges unchanged. A key that already exists (an engine default, another method's
node or another method's ``extra_config``) is left as is when the declared default is equal (same
type and value), else it is a one-line error naming the method file(s).
"""
import ast
import glob
import os

from yacs.config import CfgNode as CN

from engine.precision import PREC_NAMES  # torch-free

HERE = os.path.dirname(os.path.abspath(__file__))

#: required declaration fields and their types
REQUIRED = {"key": str, "trainer": str, "node": str, "config": dict, "b2n_cfg": str, "xd_cfg": str,
            "order": int}
#: optional fields, their types and defaults (None = derived, see :func:`_complete`)
OPTIONAL = {"checkpoint": ((str, type(None)), "prompt_learner"), "config_dir": (str, None),
            "b2n_cfg_per_dataset": (dict, {}), "prec": (str, None), "aliases": ((tuple, list), ()),
            "zero_shot": (bool, False), "title": (str, None), "fewshot_cfg": ((str, type(None)), None),
            "fewshot_cfg_per_shots": (dict, {}), "fewshot_cfg_per_dataset": (dict, {}),
            "extra_config": (dict, {})}

_CACHE = {}


def _literal(path):
    """The ``METHOD = {...}`` literal of a module file, or None when it declares none."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "METHOD" for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise ValueError(f"{path}: METHOD must be a literal dict (strings, numbers, bools, None, "
                                 f"tuples, lists, dicts)") from None
    return None


def _complete(decl, path):
    """Check the fields of one declaration and fill the optional ones (one-line errors)."""
    if not isinstance(decl, dict):
        raise ValueError(f"{path}: METHOD must be a dict, got {type(decl).__name__}")
    unknown = sorted(set(decl) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ValueError(f"{path}: unknown METHOD field(s) {unknown}; expected {sorted({**REQUIRED, **OPTIONAL})}")
    for name, kind in REQUIRED.items():
        if not isinstance(decl.get(name), kind):
            raise ValueError(f"{path}: METHOD[{name!r}] must be of type {kind.__name__}, got {decl.get(name)!r}")
    out = dict(decl)
    for name, (kind, default) in OPTIONAL.items():
        if name in out and not isinstance(out[name], kind):
            raise ValueError(f"{path}: METHOD[{name!r}] has the wrong type: {out[name]!r}")
        out.setdefault(name, default)
    config = out["config"]
    for key in ("PREC", "UPSTREAM_NUMERICS"):
        if key not in config:
            raise ValueError(f"{path}: METHOD['config'] must define {key} (TRAINER.{out['node']}.{key})")
    out["config_dir"] = out["config_dir"] or out["trainer"]
    out["prec"] = out["prec"] or config["PREC"]
    out["title"] = out["title"] or out["trainer"]
    out["aliases"] = tuple(out["aliases"])
    out["b2n_cfg_per_dataset"] = dict(out["b2n_cfg_per_dataset"])
    out["fewshot_cfg_per_dataset"] = dict(out["fewshot_cfg_per_dataset"])
    out["fewshot_cfg_per_shots"] = dict(out["fewshot_cfg_per_shots"])
    if not all(isinstance(k, int) and isinstance(v, str) for k, v in out["fewshot_cfg_per_shots"].items()):
        raise ValueError(f"{path}: METHOD['fewshot_cfg_per_shots'] must map shot counts (int) to config names")
    out["extra_config"] = _check_extra_config(out["extra_config"], out["node"], path)
    for key, value in (("config.PREC", config["PREC"]), ("prec", out["prec"])):
        if value not in PREC_NAMES:
            raise ValueError(f"{path}: METHOD {key} must be one of {', '.join(PREC_NAMES)}, got {value!r}")
    out["path"] = path
    return out


def _check_extra_config(extra, node, path):
    """``{"DOTTED.NODE.PATH": {"KEY": value}}`` with upper-case names, plain (non-dict) values and not
    the method's own ``TRAINER.<node>``; returns a copy (one-line errors naming the file)."""
    what = f"{path}: METHOD['extra_config']"
    out = {}
    for dotted, keys in extra.items():
        parts = dotted.split(".") if isinstance(dotted, str) else []
        if not parts or not all(p.isidentifier() and p.isupper() for p in parts):
            raise ValueError(f"{what} keys must be dotted upper-case config node paths like 'LOSS' or "
                             f"'TRAINER.COOP', got {dotted!r}")
        if dotted == f"TRAINER.{node}":
            raise ValueError(f"{what} names the method's own node {dotted}; declare its keys in METHOD['config']")
        if not isinstance(keys, dict) or not keys:
            raise ValueError(f"{what}[{dotted!r}] must be a non-empty dict of KEY: default, got {keys!r}")
        for key, value in keys.items():
            if not (isinstance(key, str) and key.isidentifier() and key.isupper()) or isinstance(value, dict):
                raise ValueError(f"{what}[{dotted!r}] must map upper-case keys to plain defaults, "
                                 f"got {key!r}: {value!r}")
        out[dotted] = dict(keys)
    return out


def _same_default(a, b):
    """Equal config defaults: same type (list and tuple alike) and value."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_default(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def method_declarations(directory=HERE):
    """Every ``METHOD`` declared by a module of ``directory``, completed, sorted by ``order``.

    Duplicated keys, trainer names, aliases or config nodes are one-line ``ValueError``s.
    """
    directory = os.path.abspath(directory)
    paths = sorted(glob.glob(os.path.join(directory, "*.py")))
    stamp = tuple((p, os.path.getmtime(p)) for p in paths)
    cached = _CACHE.get(directory)
    if cached and cached[0] == stamp:
        return [dict(d) for d in cached[1]]
    decls = []
    for path in paths:
        decl = _literal(path)
        if decl is not None:
            decls.append(_complete(decl, path))
    seen = {}
    for decl in decls:
        for field in ("key", "trainer", "node"):
            names = {decl[field].lower()}
            if field == "trainer":
                names |= {a.lower() for a in decl["aliases"]}
            for name in sorted(names):
                if (field, name) in seen:
                    raise ValueError(f"{decl['path']}: METHOD {field} {name!r} is already declared in "
                                     f"{seen[(field, name)]}")
                seen[(field, name)] = decl["path"]
    extra = {}  # "NODE.PATH.KEY" -> (default, declaring file)
    for decl in decls:
        for dotted, keys in decl["extra_config"].items():
            for key, value in keys.items():
                full = f"{dotted}.{key}"
                if full in extra and not _same_default(extra[full][0], value):
                    raise ValueError(f"{decl['path']}: METHOD['extra_config'] {full} = {value!r} disagrees with "
                                     f"{extra[full][0]!r} declared in {extra[full][1]}")
                extra.setdefault(full, (value, decl["path"]))
    decls.sort(key=lambda d: (d["order"], d["key"]))
    _CACHE[directory] = (stamp, decls)
    return [dict(d) for d in decls]


def _registered_classes(path):
    """Names of the classes of ``path`` registered as trainers: decorated ``@register_method(...)`` or
    ``@TRAINER_REGISTRY.register(...)`` (read with :mod:`ast`), in file order."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    names = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            func = deco.func if isinstance(deco, ast.Call) else deco
            if (isinstance(func, ast.Name) and func.id == "register_method") or (
                    isinstance(func, ast.Attribute) and func.attr == "register"
                    and isinstance(func.value, ast.Name) and func.value.id == "TRAINER_REGISTRY"):
                names.append(node.name)
                break
    return names


def trainer_names(directory=HERE):
    """Every trainer class name ``--trainer`` accepts (aliases aside), torch-free: each declared method's
    trainer in declaration order, followed by the other trainer classes its module registers (e.g.
    ``ZeroshotCLIP2`` after ``ZeroshotCLIP``)."""
    names = []
    for decl in method_declarations(directory):
        names.append(decl["trainer"])
        names += [c for c in _registered_classes(decl["path"]) if c != decl["trainer"] and c not in names]
    return names


def extend_cfg(cfg, directory=HERE):
    """Add ``TRAINER.<node>`` with its declared defaults for every declared method, then every
    method's ``extra_config`` nodes and keys (see the module docstring), in place; returns ``cfg``."""
    decls = method_declarations(directory)
    for decl in decls:
        cfg.TRAINER[decl["node"]] = CN(dict(decl["config"]))
    for decl in decls:
        for dotted, keys in decl["extra_config"].items():
            node = cfg
            for i, part in enumerate(dotted.split(".")):
                if part not in node:
                    node[part] = CN()
                node = node[part]
                if not isinstance(node, CN):
                    where = ".".join(dotted.split(".")[:i + 1])
                    raise ValueError(f"{decl['path']}: METHOD['extra_config'] node {dotted}: {where} is a "
                                     f"config key, not a node")
            for key, value in keys.items():
                if key not in node:
                    node[key] = value
                elif not _same_default(node[key], value):
                    raise ValueError(f"{decl['path']}: METHOD['extra_config'] {dotted}.{key} = {value!r} disagrees "
                                     f"with the existing default {node[key]!r}")
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    return cfg
