"""Prompt-learning methods; importing this package imports every module in it, which registers each
trainer in ``TRAINER_REGISTRY`` (a new ``trainers/<method>.py`` needs no edit here)."""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
