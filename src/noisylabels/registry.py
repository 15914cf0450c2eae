"""A tiny name -> factory registry shared by datasets, models, losses, methods, noise types."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import UserError

__all__ = ["Registry"]

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise :class:`UserError` listing valid ones.

    Parameters
    ----------
    kind:
        What the registry holds ("dataset", "model", ...), used in messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, *, help: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``fn`` under ``name`` (lower-case, unique)."""

        def deco(fn: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[key] = fn
            doc = help if help is not None else (fn.__doc__ or "").strip().splitlines()
            self._help[key] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return fn

        return deco

    def get(self, name: str) -> T:
        """Return the factory for ``name`` or raise a one-line :class:`UserError`."""
        key = str(name).lower()
        if key not in self._items:
            raise UserError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self, name: str) -> str:
        return self._help.get(name.lower(), "")

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def call_with_options(kind: str, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` turning a bad keyword option into a one-line :class:`UserError`."""
    import inspect

    sig = inspect.signature(fn)
    params = sig.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = [k for k in kwargs if k not in params]
        if bad:
            valid = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY]
            raise UserError(
                f"{kind} {name!r} has no option(s) {', '.join(map(repr, bad))}; "
                f"valid options: {', '.join(valid) or '(none)'}"
            )
    return fn(*args, **kwargs)


__all__ += ["call_with_options"]
