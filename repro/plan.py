"""Job planning: one :class:`Job` per ``train.py`` run of the protocols, with its output folder,
arguments and dependencies.

Protocols: base-to-novel (``base2new``), cross-dataset (``xd``), domain generalisation (``dg``),
CoOp's few-shot protocol (``fewshot``: all classes, K shots) and the evaluation of released weights
(``released``). Output tree (MaPLe's layout for base-to-novel; ``xd/`` for
xd and dg; the official CoOp layouts for ``coop_main`` / ``coop_eval`` / ``zeroshot``)::

    <root>/base2new/train_base/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>   train on base, test base
    <root>/base2new/test_new/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>     load last epoch, test new
    <root>/xd/train/<source>/<trainer>/<cfg>_<K>shots/seed<N>                train on all source classes
    <root>/xd/test/<target>/<trainer>/<cfg>_<K>shots/seed<N>                 xd and dg targets
    <root>/fewshot/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>               few-shot, all classes (K = 0: zero-shot)
    <root>/released/base2new/test_{base,new}/<dataset>/shots_<K>/<trainer>/<cfg>/seed<N>   released weights
    <root>/<dataset>/CoOp/<cfg>_<K>shots/nctx<n>_csc<c>_ctp<p>/seed<N>      scripts/coop/main.sh
    <root>/evaluation/CoOp/<cfg>_<K>shots/nctx<n>_csc<c>_ctp<p>/<dataset>/seed<N>  scripts/coop/eval.sh
    <root>/ZeroshotCLIP/<cfg>/<dataset>                                      scripts/zsclip/zeroshot.sh

Plan order: protocol (base2new, xd, dg, fewshot, released) -> method -> seed -> dataset (-> shots);
within a base2new dataset the train job precedes its test job; the ImageNet xd training job is
shared by xd and dg (listed once, first where it is needed). The ``--load-epoch`` of a test job is
the training config's ``OPTIM.MAX_EPOCH`` (YAML, overridden by ``OPTIM.MAX_EPOCH`` in the opts;
Dassl default 10). Every job passes ``TRAINER.<NODE>.PREC <MethodSpec.prec>`` (the precision the
official scripts ran with; VPT fp32) and, with ``Context.upstream_numerics``,
``TRAINER.<NODE>.UPSTREAM_NUMERICS True``, before the protocol's opts and the user's opts (last wins).
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
from dataclasses import dataclass, field

import yaml

from repro.errors import PlanError
from repro.methods import BASE2NEW_DATASETS, DG_TARGETS, METHOD_ORDER, XD_SOURCE, XD_TARGETS, MethodSpec, get_method
from repro.released import discover, weights_for

PROTOCOLS = ("base2new", "xd", "dg", "fewshot", "released")
PAPER_PROTOCOLS = ("base2new", "xd", "dg")  # what ``--protocol all`` means
KINDS = ("base2new_train", "base2new_test", "xd_train", "xd_test", "fewshot", "released_base", "released_new",
         "coop_main", "coop_eval", "zeroshot")
TRAIN_KINDS = ("base2new_train", "xd_train", "fewshot", "coop_main")
DEFAULT_SHOTS = 16
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)
#: scripts/coop/main.sh defaults of the CoOp repo's eval.sh (the ImageNet model it evaluates)
COOP_DEFAULTS = {"ctp": "end", "nctx": 16, "csc": "False"}
DASSL_DEFAULT_MAX_EPOCH = 10


@dataclass
class Job:
    """One ``train.py`` invocation. ``args`` excludes the interpreter and script path.

    ``log_kind`` is ``train`` (finished = result block after the end signal) or ``eval``.
    ``deps`` are ids of jobs whose result this one needs (``model_dir`` is that training run;
    released weights are not a run: ``model_dir`` is None and ``extra["weights_dir"]`` names them).
    ``problem`` is set when the job cannot run at all (missing config or checkpoint); it is reported
    instead of running. ``seed`` is None for a run without ``--seed`` (``zeroshot.sh``).
    """

    id: str
    protocol: str
    kind: str
    method: str
    trainer: str
    cfg: str
    dataset: str
    seed: int | None
    output_dir: str
    args: list
    log_kind: str
    model_dir: str | None = None
    load_epoch: int | None = None
    deps: tuple = ()
    problem: str | None = None
    extra: dict = field(default_factory=dict)
    shots: int | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.trainer} {self.cfg} {self.dataset} seed{self.seed}"

    def command(self, python: str, train_py: str) -> list:
        """The argument list the runner executes (in the repository root)."""
        return [python, train_py] + list(self.args)

    def command_line(self, python: str, train_py: str) -> str:
        """:meth:`command` shell-quoted, to paste into a shell opened in the repository root."""
        return shlex.join(self.command(python, train_py))


def split_opts(opts) -> list:
    """Validate trailing ``KEY VALUE`` opts (even count, keys look like ``A.B``); returns a list."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise PlanError(f"opts must be KEY VALUE pairs, got an odd number ({len(opts)}): {' '.join(opts)}")
    for key in opts[0::2]:
        if "." not in key or key.startswith("-"):
            raise PlanError(f"opts key {key!r} is not a config key like OPTIM.MAX_EPOCH")
    return opts


def opt_value(opts, key: str):
    """Last value given for ``key`` in ``opts`` (yacs merge_from_list: last wins), else None."""
    value = None
    for k, v in zip(opts[0::2], opts[1::2]):
        if k == key:
            value = v
    return value


def _yaml_get(data, dotted: str):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def resolve_max_epoch(cfg_file: str, opts) -> int:
    """``OPTIM.MAX_EPOCH`` of a run: opts override the YAML, which overrides Dassl's default 10."""
    from_opts = opt_value(opts, "OPTIM.MAX_EPOCH")
    if from_opts is not None:
        try:
            return int(from_opts)
        except ValueError:
            raise PlanError(f"OPTIM.MAX_EPOCH in opts must be an integer, got {from_opts!r}") from None
    try:
        with open(cfg_file, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise PlanError(f"cannot read config file {cfg_file}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise PlanError(f"config file {cfg_file} is not valid YAML: {str(e).splitlines()[0]}") from None
    value = _yaml_get(data, "OPTIM.MAX_EPOCH")
    if value is None:
        return DASSL_DEFAULT_MAX_EPOCH
    if not isinstance(value, int) or isinstance(value, bool):
        raise PlanError(f"{cfg_file}: OPTIM.MAX_EPOCH must be an integer, got {value!r}")
    return value


def resolve_config_dir(repo_root: str, name: str) -> str:
    """``configs/trainers/<name>`` (exact, else the one folder matching case-insensitively)."""
    base = os.path.join(repo_root, "configs", "trainers")
    exact = os.path.join(base, name)
    if os.path.isdir(exact) or not os.path.isdir(base):
        return exact
    for entry in sorted(os.listdir(base)):
        if entry.lower() == name.lower() and os.path.isdir(os.path.join(base, entry)):
            return os.path.join(base, entry)
    return exact


def shots_of(opts) -> int:
    value = opt_value(opts, "DATASET.NUM_SHOTS")
    if value is None:
        return DEFAULT_SHOTS
    try:
        return int(value)
    except ValueError:
        raise PlanError(f"DATASET.NUM_SHOTS in opts must be an integer, got {value!r}") from None


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def split_dataset(text: str) -> tuple:
    """``(name, config stem)`` of a dataset argument: ``caltech101`` -> ``("caltech101", "caltech101")``;
    ``NAME=STEM`` (e.g. ``flowers=image_folder``) runs ``configs/datasets/STEM.yaml`` and files the
    runs under ``NAME`` (the output folder name and the dataset name in the tables)."""
    name, sep, stem = str(text).partition("=")
    if not sep:
        stem = name
    for part, what in ((name, "name"), (stem, "config name")):
        if not _NAME_OK.match(part):
            raise PlanError(f"dataset {what} {part!r} in {text!r} must be letters, digits, '_', '-' or '.' "
                            f"(NAME=CONFIG, e.g. flowers=image_folder)")
    return name, stem


def _rel(path: str, root: str) -> str:
    """``path`` relative to ``root`` when inside it (keeps logged commands short), else as is."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@dataclass
class Context:
    """Where things live: ``repo_root`` (working directory of train.py), ``config_root`` (holds
    ``configs/trainers`` and ``configs/datasets``; default ``repo_root``), ``output_root``,
    ``data_root``, user ``opts``, the xd ``source``, an optional config-name override,
    ``upstream_numerics`` (every job also passes ``TRAINER.<NODE>.UPSTREAM_NUMERICS True``),
    ``weights`` (the released-weights folder of the ``released`` protocol), ``opts_for`` (per
    method key, opts given to that method's jobs only, after ``opts``: e.g. CoOp at 200 epochs) and
    ``clip_weights`` (the CLIP file foreign methods' own CLIP loading reads:
    ``train.py --dassl-repo ... --clip-weights FILE --``)."""

    repo_root: str
    output_root: str
    data_root: str
    opts: list = field(default_factory=list)
    source: str = XD_SOURCE
    cfg_override: str | None = None
    config_root: str | None = None
    upstream_numerics: bool = False
    weights: str | None = None
    opts_for: dict = field(default_factory=dict)  # method key -> KEY VALUE opts of that method only (after opts)
    clip_weights: str | None = None


def cfg_node(spec: MethodSpec) -> str:
    """The method's config node under ``TRAINER`` (``COMMA``, ``VPT``, ``ZSCLIP``, ...)."""
    return getattr(spec, "node", None) or getattr(spec, "cfg_node", None) or spec.key.upper()


def method_opts(ctx: Context, spec: MethodSpec) -> list:
    """``TRAINER.<NODE>.PREC <official precision>`` (+ ``UPSTREAM_NUMERICS True`` when asked)."""
    node = cfg_node(spec)
    opts = [f"TRAINER.{node}.PREC", spec.prec]
    if ctx.upstream_numerics and not spec.foreign:  # official code has no such key: it is upstream
        opts += [f"TRAINER.{node}.UPSTREAM_NUMERICS", "True"]
    return opts


def _coop_tag(params: dict) -> str:
    return f"nctx{params['nctx']}_csc{params['csc']}_ctp{params['ctp']}"


def run_dir(ctx: Context, kind: str, spec: MethodSpec, dataset: str, seed, cfg: str, shots: int | None = None,
            params: dict | None = None) -> str:
    """Output folder of one run (layout in the module docstring)."""
    k = shots_of(ctx.opts) if shots is None else shots
    root = ctx.output_root
    s = f"seed{seed}"
    folder = spec.folder  # the trainer name; <trainer>@<source> for a foreign method's official code
    if kind == "base2new_train":
        return os.path.join(root, "base2new", "train_base", dataset, f"shots_{k}", folder, cfg, s)
    if kind == "base2new_test":
        return os.path.join(root, "base2new", "test_new", dataset, f"shots_{k}", folder, cfg, s)
    if kind == "xd_train":
        return os.path.join(root, "xd", "train", dataset, folder, f"{cfg}_{k}shots", s)
    if kind == "xd_test":
        return os.path.join(root, "xd", "test", dataset, folder, f"{cfg}_{k}shots", s)
    if kind == "fewshot":
        return os.path.join(root, "fewshot", dataset, f"shots_{k}", folder, cfg, s)
    if kind in ("released_base", "released_new"):
        sub = "test_base" if kind == "released_base" else "test_new"
        return os.path.join(root, "released", "base2new", sub, dataset, f"shots_{k}", spec.trainer, cfg, s)
    if kind == "coop_main":
        return os.path.join(root, dataset, spec.trainer, f"{cfg}_{k}shots", _coop_tag(params), s)
    if kind == "coop_eval":
        return os.path.join(root, "evaluation", spec.trainer, f"{cfg}_{k}shots", _coop_tag(params), dataset, s)
    if kind == "zeroshot":
        return os.path.join(root, spec.trainer, cfg, dataset)
    raise PlanError(f"unknown job kind {kind!r}; expected one of {KINDS}")


def default_cfg(spec: MethodSpec, kind: str, dataset: str, shots: int) -> str:
    """The config name a job of ``kind`` uses (``Context.cfg_override`` replaces it)."""
    if kind.startswith("base2new") or kind.startswith("released"):
        return spec.base2new_cfg(dataset)
    if kind == "fewshot":
        return spec.fewshot_config(dataset, shots)
    return spec.xd_cfg


def _load_epoch(cfg_file: str, opts, problem):
    if problem is not None:
        return None, problem
    try:
        return resolve_max_epoch(cfg_file, opts), None
    except PlanError as e:
        return None, str(e)


def make_job(ctx: Context, method: str, kind: str, dataset: str, seed, protocol: str | None = None,
             shots: int | None = None, params: dict | None = None) -> Job:
    """Build the job for one script call (``scripts/<method>/<kind>.sh DATASET SEED [opts]``).

    ``dataset`` is a config stem or ``NAME=STEM`` (:func:`split_dataset`). For ``xd_train`` the dataset is
    the source; for ``xd_test`` the model comes from the source's xd training folder (``ctx.source``).
    Zero-shot methods run every kind as ``--eval-only``.
    ``shots``: K of a ``fewshot`` / ``coop_main`` job (default: ``DATASET.NUM_SHOTS`` of the opts, else 16).
    ``params``: ``coop_main`` / ``coop_eval`` settings ``ctp``, ``nctx``, ``csc`` (CoOp's defaults).
    ``released_*`` jobs load ``<ctx.weights>``' checkpoint found by ``repro.released``.
    """
    spec = get_method(method)
    if kind not in KINDS:
        raise PlanError(f"unknown job kind {kind!r}; expected one of {KINDS}")
    dataset, stem = split_dataset(dataset)
    source = split_dataset(ctx.source)[0]
    opts = split_opts(list(ctx.opts) + list(ctx.opts_for.get(spec.key, [])))
    params = dict(COOP_DEFAULTS, **(params or {})) if kind.startswith("coop") else None
    k = shots_of(opts) if shots is None else int(shots)
    if kind == "fewshot" and spec.zero_shot:
        k = 0  # nothing is trained: one evaluation on all classes stands for every K
    cfg = ctx.cfg_override or default_cfg(spec, kind, stem, k)
    croot = ctx.config_root or ctx.repo_root
    args_root = ctx.repo_root  # what relative paths in the arguments are relative to (train.py's cwd)
    if spec.foreign:
        if kind not in ("base2new_train", "base2new_test", "xd_train", "xd_test", "fewshot"):
            raise PlanError(f"{spec.folder} runs the official code: the {kind} protocol is not available for it")
        repo = spec.repo_path()
        croot = args_root = os.path.normpath(os.path.join(repo, spec.config_root))
        ctx = dataclasses.replace(ctx, output_root=os.path.abspath(ctx.output_root),
                                  data_root=os.path.abspath(ctx.data_root))  # their train.py runs in the repo
    cfg_file = os.path.join(resolve_config_dir(croot, spec.config_dir), cfg + ".yaml")
    ds_file = os.path.join(croot, "configs", "datasets", stem + ".yaml")
    out = run_dir(ctx, kind, spec, dataset, seed, cfg, k, params)
    problem = None
    for path, what in ((cfg_file, "method config"), (ds_file, "dataset config")):
        if not os.path.isfile(path):
            problem = problem or f"{what} not found: {path}"
    args = ["--root", ctx.data_root] + (["--seed", str(seed)] if seed is not None else []) + \
        ["--trainer", spec.trainer, "--dataset-config-file", _rel(ds_file, args_root),
         "--config-file", _rel(cfg_file, args_root), "--output-dir", out]
    model_dir, load_epoch, deps, extra = None, None, (), {}
    if kind in ("base2new_test", "xd_test", "coop_eval") and not spec.zero_shot:
        if kind == "base2new_test":
            model_dir = run_dir(ctx, "base2new_train", spec, dataset, seed, cfg)  # trained with the same cfg
        elif kind == "xd_test":
            model_dir = run_dir(ctx, "xd_train", spec, source, seed, cfg)
        else:
            model_dir = run_dir(ctx, "coop_main", spec, source, seed, cfg, k, params)
        deps = (job_id(ctx, model_dir),)
        load_epoch, problem = _load_epoch(cfg_file, opts, problem)
        args += ["--model-dir", model_dir]
    elif kind in ("released_base", "released_new"):
        if spec.zero_shot:
            raise PlanError(f"{spec.trainer} has no learned weights to evaluate; released weights need a "
                            "prompt-learning method")
        weights_dir = weights_for(ctx.weights, stem, seed)
        extra["weights_dir"] = weights_dir
        load_epoch, problem = _load_epoch(cfg_file, opts, problem)
        args += ["--model-dir", weights_dir]
        if problem is None:
            problem = _checkpoint_missing(weights_dir, load_epoch)
    if load_epoch is not None:
        args += ["--load-epoch", str(load_epoch)]
    trains = kind in TRAIN_KINDS and not spec.zero_shot
    if not trains:
        args.append("--eval-only")
    args += method_opts(ctx, spec)
    if kind in ("base2new_train", "released_base"):
        args += ["DATASET.NUM_SHOTS", str(k), "DATASET.SUBSAMPLE_CLASSES", "base"]
    elif kind in ("base2new_test", "released_new"):
        args += ["DATASET.NUM_SHOTS", str(k), "DATASET.SUBSAMPLE_CLASSES", "new"]
    elif kind == "xd_train" or (kind == "fewshot" and trains):
        args += ["DATASET.NUM_SHOTS", str(k)]
    elif kind in ("coop_main", "coop_eval"):
        args += ["TRAINER.COOP.N_CTX", str(params["nctx"]), "TRAINER.COOP.CSC", str(params["csc"]),
                 "TRAINER.COOP.CLASS_TOKEN_POSITION", str(params["ctp"])]
        if kind == "coop_main":
            args += ["DATASET.NUM_SHOTS", str(k)]
    args += opts  # user opts last: they override the protocol's opts (yacs: last wins)
    if spec.foreign:  # train.py --dassl-repo REPO [--clip-weights FILE] -- <the repo's own arguments>
        harness = ["--dassl-repo", repo] + (["--clip-weights", os.path.abspath(ctx.clip_weights)]
                                            if ctx.clip_weights else [])
        args = harness + ["--"] + args
    if protocol is None:
        protocol = {"fewshot": "fewshot", "coop_main": "fewshot", "released_base": "released",
                    "released_new": "released", "zeroshot": "zeroshot"}.get(kind)
        if protocol is None:
            protocol = "base2new" if kind.startswith("base2new") else ("dg" if stem in DG_TARGETS else "xd")
    return Job(id=job_id(ctx, out), protocol=protocol, kind=kind, method=spec.key, trainer=spec.trainer,
               cfg=cfg, dataset=dataset, seed=seed, output_dir=out, args=args,
               log_kind="train" if trains else "eval", model_dir=model_dir, load_epoch=load_epoch,
               deps=deps, problem=problem, extra=extra, shots=k)


def _checkpoint_missing(model_dir: str, epoch) -> str | None:
    if epoch is None:
        return None
    if glob.glob(os.path.join(glob.escape(model_dir), "*", f"model.pth.tar-{epoch}")):
        return None
    return (f"no checkpoint model.pth.tar-{epoch} under {model_dir}/<model name>/ (the epoch is the config's "
            f"OPTIM.MAX_EPOCH; pass OPTIM.MAX_EPOCH N to load another)")


def job_id(ctx: Context, out_dir: str) -> str:
    """Stable id of a job: its output folder relative to the output root, with ``/`` separators."""
    return os.path.relpath(out_dir, ctx.output_root).replace(os.sep, "/")


def expand_protocols(names) -> list:
    """Protocol names in plan order; ``all`` = base2new, xd, dg (not fewshot, not released)."""
    out = []
    for name in names:
        chosen = PAPER_PROTOCOLS if name == "all" else (name,)
        for p in chosen:
            if p not in PROTOCOLS:
                raise PlanError(f"unknown protocol {name!r}; expected base2new, xd, dg, fewshot, released or all")
            if p not in out:
                out.append(p)
    return [p for p in PROTOCOLS if p in out]


def _method_keys(methods) -> list:
    specs = []
    for m in methods:
        chosen = list(METHOD_ORDER) if m == "all" else [get_method(m).key]
        specs.extend(k for k in chosen if k not in specs)
    return specs


def build_plan(ctx: Context, protocols, methods, datasets, seeds, dg_targets=None, shots=None) -> list:
    """All jobs of a sweep, in plan order (module docstring), without duplicates.

    ``datasets``: ``["all"]`` or explicit config stems; they are the base-to-novel / few-shot datasets
    and the xd targets (minus the source). ``dg_targets`` defaults to the four ImageNet variants.
    ``shots``: the few-shot protocol's K values (default 1 2 4 8 16). The ``released`` protocol
    evaluates the datasets and seeds found in ``ctx.weights`` (``repro.released``), restricted
    to ``datasets`` / ``seeds`` when given (``seeds`` None = every seed found).
    """
    protos = expand_protocols(protocols)
    specs = _method_keys(methods)
    if not seeds and protos != ["released"]:
        raise PlanError("no seeds given")
    if list(datasets) == ["all"]:
        b2n, xd_targets = list(BASE2NEW_DATASETS), list(XD_TARGETS)
    else:
        b2n = list(dict.fromkeys(datasets))
        xd_targets = [d for d in b2n if split_dataset(d)[0] != split_dataset(ctx.source)[0]]
    dg = list(dg_targets) if dg_targets else list(DG_TARGETS)
    k_values = sorted(set(int(k) for k in (shots or FEWSHOT_SHOTS)))
    if any(k < 1 for k in k_values):
        raise PlanError(f"--shots must be positive integers, got {' '.join(map(str, k_values))}")
    jobs, seen = [], set()

    def add(job):
        if job.id not in seen:
            seen.add(job.id)
            jobs.append(job)

    for proto in protos:
        if proto == "released":
            found = discover(ctx.weights, None if list(datasets) == ["all"] else b2n, seeds)
            for key in specs:
                for seed in sorted({s for _, s in found}):
                    for ds in [d for d, s in found if s == seed]:
                        add(make_job(ctx, key, "released_base", ds, seed, "released"))
                        add(make_job(ctx, key, "released_new", ds, seed, "released"))
            continue
        for key in specs:
            for seed in seeds:
                if proto == "base2new":
                    for ds in b2n:
                        add(make_job(ctx, key, "base2new_train", ds, seed, "base2new"))
                        add(make_job(ctx, key, "base2new_test", ds, seed, "base2new"))
                elif proto == "fewshot":
                    for ds in b2n:
                        for k in k_values:
                            add(make_job(ctx, key, "fewshot", ds, seed, "fewshot", shots=k))
                else:
                    add(make_job(ctx, key, "xd_train", ctx.source, seed, proto))
                    for ds in (xd_targets if proto == "xd" else dg):
                        add(make_job(ctx, key, "xd_test", ds, seed, proto))
    return jobs


def checkpoint_problem(job: Job) -> str | None:
    """For a test job, a one-line problem when ``model_dir`` holds no ``*/model.pth.tar-<load_epoch>``."""
    if job.model_dir is None or job.load_epoch is None:
        return None
    pattern = os.path.join(glob.escape(job.model_dir), "*", f"model.pth.tar-{job.load_epoch}")
    if glob.glob(pattern):
        return None
    return (f"no checkpoint model.pth.tar-{job.load_epoch} under {job.model_dir}/<model name>/ "
            f"(was it trained with OPTIM.MAX_EPOCH {job.load_epoch}?)")
