"""Command-line helpers shared by the tools (torch-free)."""
import re

#: an upper-case dotted config key such as ``OPTIM.MAX_EPOCH``
CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def split_argv(argv):
    """``(flags, opts)``: the trailing ``KEY VALUE`` config opts start at ``--`` or at the first
    upper-case dotted config key, so ``--seeds 1 2 OPTIM.MAX_EPOCH 1`` parses."""
    argv = list(argv)
    for i, tok in enumerate(argv):
        if tok == "--":
            return argv[:i], argv[i + 1:]
        if CONFIG_KEY.match(tok):
            return argv[:i], argv[i:]
    return argv, []
