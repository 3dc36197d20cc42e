"""Imports every verifier module in this package so their `@register_verifier` decorators run."""
import importlib
import pkgutil

import verifiers

_SKIP = {"base", "builtins", "pool"}

for _mod in pkgutil.iter_modules(verifiers.__path__):
    if _mod.name not in _SKIP and not _mod.name.startswith("_"):
        importlib.import_module(f"verifiers.{_mod.name}")
