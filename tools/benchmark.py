"""Speed, text-encoder work and memory of each method with its official base-to-novel config, without a dataset.

    python tools/benchmark.py --help      (the flags; docs/BENCHMARKS.md)

The tool is the package ``tools/benchmarking`` (one module per job); this script is its command line.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from benchmarking.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
