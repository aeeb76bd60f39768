"""Shared pytest setup: the repo root and tests/ on ``sys.path``, and no state shared between tests.

Around every test (so that each passes alone, in file order and in random order, ``pytest-randomly``):

* the global RNGs (Python ``random``, NumPy, torch CPU when torch is loaded) start from a fixed seed;
* ``os.environ`` and the working directory are restored afterwards;
* the project logger is reset (log-file handlers closed), so tests never write into each other's folders;
* classes a test registered in the trainer/dataset/evaluator registries are removed again (those
  registered by importing a test module stay: the module is cached, it would not register them twice).

Areas add their own helpers in ``tests/fixtures_<area>.py`` and import them directly.
"""
import os
import random
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for _p in (REPO_ROOT, TESTS_DIR):
    if _p not in sys.path:
        sys.path.insert(0, _p)

# The project logger exists before the first test, as in a full run where collection imports create it:
# pytest >= 9.1 then attaches its own handlers to it (it does so for every non-propagating logger), so
# tests that inspect handlers must count only the project's own (``_harness_owned``), whatever order.
from engine.utils.logger import get_logger  # noqa: E402

get_logger()

TEST_SEED = 20240229
# module -> attribute of the registries restored after each test (only those already imported)
_REGISTRIES = (("engine.trainer", "TRAINER_REGISTRY"), ("engine.data.registry", "DATASET_REGISTRY"),
               ("engine.evaluator", "EVALUATOR_REGISTRY"))


def _seed_global_rngs(seed):
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)


def _registries():
    out = []
    for module_name, attr in _REGISTRIES:
        module = sys.modules.get(module_name)
        registry = getattr(module, attr, None) if module is not None else None
        if registry is not None and hasattr(registry, "_obj_map"):
            out.append(registry)
    return out


def _registered_by_a_test_call(obj, modules_before):
    """True for an object a test defined and registered by a call (not by importing its module)."""
    module = getattr(obj, "__module__", "") or ""
    if "<locals>" in getattr(obj, "__qualname__", ""):
        return True
    leaf = module.rsplit(".", 1)[-1]
    return leaf.startswith(("test_", "fixtures_", "conftest")) and module in modules_before


def _restore_registry(registry, objects, aliases, modules_before):
    """Undo what a test registered: new or replaced entries that a test's code registered."""
    for key, obj in list(registry._obj_map.items()):
        if key in objects and objects[key] is obj:
            continue
        if _registered_by_a_test_call(obj, modules_before):
            if key in objects:
                registry._obj_map[key] = objects[key]
            else:
                del registry._obj_map[key]
    for alias, key in list(registry._aliases.items()):
        if alias not in aliases and key not in registry._obj_map:
            del registry._aliases[alias]
    for alias, key in aliases.items():
        registry._aliases.setdefault(alias, key)


@pytest.fixture(autouse=True)
def _isolated_test():
    """Fixed RNG seeds before; environment, working directory, logger and registries restored after."""
    environ = dict(os.environ)
    cwd = os.getcwd()
    registries = [(r, dict(r._obj_map), dict(r._aliases)) for r in _registries()]
    modules_before = set(sys.modules)
    _seed_global_rngs(TEST_SEED)
    yield
    for registry, objects, aliases in registries:
        _restore_registry(registry, objects, aliases, modules_before)
    if os.getcwd() != cwd:
        os.chdir(cwd)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    from engine.utils.logger import setup_logger

    setup_logger(None)


@pytest.fixture
def repo_root():
    """Absolute path of the repository root."""
    return REPO_ROOT
