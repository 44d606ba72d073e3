"""Registries of translation handlers: one small function per Core ML layer or MIL op type."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

H = TypeVar("H", bound=Callable[..., object])


def registrar(table: dict[str, H], what: str) -> Callable[..., Callable[[H], H]]:
    """A decorator factory: ``@decorator("conv", "deconv")`` files a handler under each name.

    Registering one name twice is a programming error, raised at import time.
    """

    def decorator(*names: str) -> Callable[[H], H]:
        def register(fn: H) -> H:
            for name in names:
                if name in table:
                    raise ValueError(f"{what} {name!r} registered twice")
                table[name] = fn
            return fn

        return register

    return decorator
