"""The harness's stand-in for Dassl 0.6.3 (plus the 0.5.0 fork's trainer extras) over the engine.

On ``sys.path`` only in ``train.py --dassl-repo`` mode (``compat.dassl_runner``); never installed.
Every name the official prompt-learning repos import is provided; anything else fails in one line
naming it (``dassl.X is not provided by the harness's Dassl compatibility package``).
"""
__version__ = "0.6.3+harness"
__author__ = "Kaiyang Zhou (API); the harness (implementation)"
HARNESS_SHIM = True  # marks this package as the harness's, not a real Dassl


def missing_name(qualified):
    """The one-line error for a Dassl name this package does not provide."""
    return AttributeError(f"{qualified} is not provided by the harness's Dassl compatibility package "
                          f"(dassl {__version__}); see docs/DASSL_REPOS.md")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing_name(f"dassl.{name}")
