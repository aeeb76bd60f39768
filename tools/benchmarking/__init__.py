"""``tools/benchmark.py``, by job: the command line (``cli``), the measured configurations (``variants``),
one method's build and phases (``measure``), timing (``timing``), text-encoder work (``text_work``), peak
memory (``memory``), child processes per phase (``isolation``) and the tables and JSON (``output``).

Imported as the top-level package ``benchmarking`` (the folder of ``tools/benchmark.py`` is on ``sys.path``),
never from the measured checkout: ``engine``, ``trainers``, ``repro`` and ``datasets`` are imported inside
the functions, after ``--code-root`` has put that checkout first on ``sys.path``.
"""
import os

#: the command-line script; child processes run it again
TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark.py")
#: this checkout (the default ``--code-root``)
REPO_ROOT = os.path.dirname(os.path.dirname(TOOL))
EXIT_USAGE = 2
EXIT_FAILED = 1
PHASES = ("train", "eval")
