"""Hooks the runner (``compat.dassl_runner``) installs: called by ``setup_logger`` and ``build_trainer``.

Without the runner (e.g. the API tests) the hooks are absent and those functions do the plain thing.
"""
HOOKS = {}  # "setup_logger": f(output) ; "build_trainer": f(cfg, trainer_class) ; "trainer_built": f(trainer)


def call(name, *args):
    hook = HOOKS.get(name)
    return hook(*args) if hook is not None else None
