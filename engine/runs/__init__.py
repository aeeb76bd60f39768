"""Run artefacts that ``train.py`` and the trainer write and read: the run record (settings of a run),
``metrics.json``, the run lock and the log contract (parsing Dassl's result lines). Below the trainer,
above ``engine.utils``; imports nothing from the reproduction or reporting layers."""
