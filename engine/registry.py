"""Name -> class registries (Dassl ``Registry`` contract plus aliases and case-insensitive lookup).

``get(name)`` resolves, in order: the exact registered name, an exact alias, then a case-insensitive
match over names and aliases. A miss raises :class:`RegistryKeyError` (a ``KeyError``) whose one-line
message lists the available names and a difflib "did you mean" hint.
"""
import difflib

__all__ = ["Registry", "RegistryKeyError"]


class RegistryKeyError(KeyError):
    """``KeyError`` whose ``str()`` is the plain one-line message (no repr quotes)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class Registry:
    """A named mapping from class name to object; ``register`` works as a decorator or a call."""

    def __init__(self, name):
        self._name = name
        self._obj_map = {}
        self._aliases = {}

    @property
    def name(self):
        return self._name

    def _check_free(self, key, force):
        if force:
            return
        if key in self._obj_map:
            raise RegistryKeyError(f'An object named "{key}" was already registered in the "{self._name}" registry')
        if key in self._aliases:
            raise RegistryKeyError(
                f'"{key}" is already an alias of "{self._aliases[key]}" in the "{self._name}" registry'
            )

    def _do_register(self, obj, force, aliases):
        key = obj.__name__
        self._check_free(key, force)
        for alias in aliases:
            if alias != key:
                self._check_free(alias, force)
        self._obj_map[key] = obj
        for alias in aliases:
            if alias != key:
                self._aliases[alias] = key

    def register(self, obj=None, *, force=False, aliases=()):
        """Register ``obj`` under ``obj.__name__`` (and ``aliases``); returns ``obj``.

        Used as ``@REG.register()``, ``@REG.register(aliases=("X",))`` or ``REG.register(cls)``.
        Registering a taken name raises ``RegistryKeyError`` unless ``force``.
        """
        if isinstance(aliases, str):
            aliases = (aliases,)
        aliases = tuple(aliases)
        if obj is None:

            def deco(func_or_class):
                self._do_register(func_or_class, force, aliases)
                return func_or_class

            return deco
        self._do_register(obj, force, aliases)
        return obj

    def _resolve(self, name):
        if not isinstance(name, str):
            return None
        if name in self._obj_map:
            return name
        if name in self._aliases:
            return self._aliases[name]
        lowered = name.lower()
        hits = {k for k in self._obj_map if k.lower() == lowered}
        hits |= {v for a, v in self._aliases.items() if a.lower() == lowered}
        if len(hits) == 1:
            return hits.pop()
        if len(hits) > 1:
            raise RegistryKeyError(
                f'"{name}" is ambiguous in the "{self._name}" registry: it matches {", ".join(sorted(hits))} '
                f"ignoring case; use the exact name"
            )
        return None

    def get(self, name):
        """Return the object registered as ``name`` (exact, alias, then case-insensitive)."""
        key = self._resolve(name)
        if key is None:
            raise RegistryKeyError(self._miss_message(name))
        return self._obj_map[key]

    def canonical_name(self, name):
        """The registered class name that ``name`` resolves to (raises like ``get``)."""
        self.get(name)
        return self._resolve(name)

    def _miss_message(self, name):
        names = self.registered_names()
        if not names:
            return f'"{name}" is not registered in the "{self._name}" registry, which is empty'
        candidates = names + sorted(self._aliases)
        lowered = {c.lower(): c for c in candidates}
        close = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)
        hint = ""
        if close:
            target = lowered[close[0]]
            target = self._aliases.get(target, target)
            hint = f' Did you mean "{target}"?'
        return (
            f'"{name}" is not registered in the "{self._name}" registry.{hint} '
            f"Available: {', '.join(names)}"
        )

    def registered_names(self):
        """Registered class names, sorted (aliases excluded)."""
        return sorted(self._obj_map)

    def aliases(self):
        """A copy of the alias -> class name mapping."""
        return dict(self._aliases)

    def __contains__(self, name):
        try:
            return self._resolve(name) is not None
        except RegistryKeyError:
            return False

    def __iter__(self):
        return iter(self._obj_map.items())

    def __len__(self):
        return len(self._obj_map)

    def __repr__(self):
        return f"Registry(name={self._name!r}, names={self.registered_names()})"
