"""A package's public names, imported from their modules on first use (PEP 562).

``data`` and ``evaluation`` state their API in ``__init__`` without importing every module of the
room: the demo's ``data.images`` does not pull in the loader, the device path or ``datasets``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_exports(package: str, public: dict[str, str]) -> tuple[Callable, list[str]]:
    """(``__getattr__``, ``__all__``) for ``package`` from ``{module: 'NAME NAME ...'}``.

    A name is looked up in its module when first asked for; an unknown name raises the
    AttributeError Python itself would.
    """
    home = {name: module for module, names in public.items() for name in names.split()}

    def __getattr__(name: str):
        if name in home:
            return getattr(import_module(f'.{home[name]}', package), name)
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    return __getattr__, sorted(home)
