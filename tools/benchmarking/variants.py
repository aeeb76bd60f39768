"""The measured configurations: method specs ``NAME[:KEY=VALUE...]`` (:class:`Variant`) and the frozen config of
each (defaults -> trainer nodes -> the method's base-to-novel YAML -> flags -> opts -> the variant's opts)."""
from __future__ import annotations

import os
import re
from types import SimpleNamespace

#: ``KEY=VALUE`` pieces of a method spec are separated by ``:`` followed by an upper-case dotted key
SPEC_SEPARATOR = re.compile(r":(?=[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)+=)")


def default_methods():
    """Every declared method's trainer name, in table order (``repro.methods.METHODS``)."""
    from repro.methods import METHODS

    return tuple(spec.trainer for spec in METHODS.values())


class Variant(SimpleNamespace):
    """One measured configuration: ``arg`` (the spec as given), ``spec`` (MethodSpec), ``opts`` (its own)."""

    @property
    def name(self):
        extra = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in zip(self.opts[::2], self.opts[1::2]))
        return f"{self.spec.trainer} {extra}".strip()


def parse_method_spec(text):
    """``NAME[:KEY=VALUE[:KEY=VALUE ...]]`` -> ``(NAME, [KEY, VALUE, ...])``."""
    from engine.utils.cli import CONFIG_KEY

    name, _, rest = text.partition(":")
    opts = []
    for piece in SPEC_SEPARATOR.split(rest) if rest else []:
        key, eq, value = piece.partition("=")
        if not eq or not CONFIG_KEY.match(key):
            raise ValueError(f"--methods {text!r}: expected NAME[:KEY=VALUE...] with an upper-case dotted KEY, "
                             f"got {piece!r}")
        opts += [key, value]
    return name, opts


def resolve_methods(names):
    """Variants in the given order (duplicates dropped); ``all`` = every declared method."""
    from repro.methods import get_method

    if [n.lower() for n in names] == ["all"]:
        names = default_methods()
    variants = []
    for text in names:
        name, opts = parse_method_spec(text)
        variant = Variant(arg=text, spec=get_method(name), opts=opts)
        if all((v.spec, v.opts) != (variant.spec, variant.opts) for v in variants):
            variants.append(variant)
    return variants


def method_cfg(variant, args, opts, code_root):
    """Frozen config: defaults -> trainer nodes -> base-to-novel YAML -> flags -> opts -> the variant's opts."""
    from engine.config import setup_cfg
    from engine.trainer import TRAINER_REGISTRY
    from trainers.config import extend_cfg

    spec = variant.spec
    config_file = os.path.join(code_root, "configs", "trainers", spec.config_dir, spec.b2n_cfg + ".yaml")
    cls = TRAINER_REGISTRY.get(spec.trainer)
    extra = ["MODEL.BACKBONE.RANDOM_INIT", "True", "USE_CUDA", str(args.device != "cpu"), "SEED", str(args.seed)]
    if args.batch_size is not None:
        extra += ["DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch_size)]
    if args.eval_batch_size is not None:
        extra += ["DATALOADER.TEST.BATCH_SIZE", str(args.eval_batch_size)]
    if args.prec is not None and cls.CFG_NODE:
        extra += [f"TRAINER.{cls.CFG_NODE}.PREC", args.prec]
    ns = SimpleNamespace(config_file=config_file, trainer=spec.trainer, backbone=args.backbone,
                         opts=extra + list(opts) + list(variant.opts))
    return setup_cfg(ns, extend=extend_cfg), cls, os.path.relpath(config_file, code_root)
