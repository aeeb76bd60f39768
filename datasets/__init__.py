"""Dataset classes; importing this package imports every module in it, which registers each dataset class
in ``engine.data.DATASET_REGISTRY`` (a new ``datasets/<name>.py`` needs no edit here). Modules whose name
starts with ``_`` and the torch-free protocol tables (``benchmark``) are helpers, imported by who needs them.
"""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")
