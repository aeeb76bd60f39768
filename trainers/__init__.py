"""Prompt-learning methods; importing this package registers every trainer in TRAINER_REGISTRY."""
import importlib

METHOD_MODULES = ("zsclip", "coop", "cocoop", "maple", "comma", "ivlp", "vpt")

for _name in METHOD_MODULES:
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:  # DEV-ONLY: tolerate modules not written yet (made strict at integration)
        if _err.name != f"{__name__}.{_name}":
            raise
