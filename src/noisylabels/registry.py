"""A tiny name -> factory registry shared by datasets, models, losses, methods, noise types."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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


def keyword_options(fn: Callable[..., Any]) -> tuple[set[str], list[str]] | None:
    """The option names a factory takes, read from its signature without calling it:
    ``(accepted names, keyword-only names)`` of ``fn``; for a class whose ``__init__`` forwards
    ``**options`` to its bases, the union over the MRO; ``None`` if anything is accepted."""
    import inspect

    targets = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c) and c is not object] \
        if inspect.isclass(fn) else [fn]
    accepted: set[str] = set()
    keyword: list[str] = []
    for target in targets:
        params = inspect.signature(target).parameters
        for k, p in params.items():
            if p.kind is p.KEYWORD_ONLY and k not in keyword:
                keyword.append(k)
            if p.kind is not p.VAR_KEYWORD:
                accepted.add(k)
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return accepted, keyword
    return None


def _parameter(fn: Callable[..., Any], key: str) -> Any:
    """The ``inspect.Parameter`` named ``key`` of ``fn`` (for a class: of the first ``__init__``
    in its MRO that names it), or ``None``."""
    import inspect

    targets = [c.__init__ for c in fn.__mro__ if "__init__" in vars(c)] if inspect.isclass(fn) else [fn]
    for target in targets:
        try:
            param = inspect.signature(target).parameters.get(key)
        except (TypeError, ValueError):
            continue
        if param is not None and param.kind is not param.VAR_KEYWORD:
            return param
    return None


_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a word",
          "list": "a list", "tuple": "a list", "Sequence": "a list", "dict": "a mapping", "Mapping": "a mapping"}


def _fits(part: str, value: Any) -> bool | None:
    """Whether ``value`` fits one ``|``-part of an annotation (``None``: a type we do not check)."""
    base = part.split("[", 1)[0].strip()
    if base == "None":
        return value is None
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300
    if base == "bool":
        return isinstance(value, bool)
    if base == "str":
        return isinstance(value, str)
    if base in ("list", "tuple", "Sequence"):
        return isinstance(value, (list, tuple))
    if base in ("dict", "Mapping"):
        return isinstance(value, Mapping)
    return None


def _check_type(kind: str, name: str, fn: Callable[..., Any], key: str, value: Any) -> None:
    """A value of the wrong type for a keyword option annotated with plain types (``int``,
    ``float | None``, ``list[str]``, ...) is a one-line error naming the option, before the
    factory's own code meets it."""
    if not isinstance(value, (type(None), bool, int, float, str, list, tuple, dict)):
        return  # a tensor, an array, a numpy scalar: the library's own call, not a config value
    param = _parameter(fn, key)
    note = getattr(param, "annotation", None)
    if not isinstance(note, str) or "Literal" in note or "Callable" in note:
        return
    parts = [p.strip() for p in note.split("|")]
    fits = [_fits(p, value) for p in parts]
    if any(f is None for f in fits) or any(fits):
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "float" in parts:
        raise UserError(f"{kind} {name!r}: option {key} must be a finite number, got {value!r}")
    want = " or ".join(dict.fromkeys(_KINDS.get(p.split("[", 1)[0], p) if p != "None" else "null" for p in parts))
    raise UserError(f"{kind} {name!r}: option {key} must be {want}, got {value!r}")


def _word(fn: Callable[..., Any], key: str, value: Any) -> Any:
    """``True`` / ``False`` as the words ``'true'`` / ``'false'`` for an option typed ``str``: YAML
    (a config file, ``--set method.transition=true``) reads those words as booleans, and an
    option such as forward's ``transition: 'auto' | 'true' | 'estimate'`` wants the word."""
    if not isinstance(value, bool):
        return value
    note = getattr(_parameter(fn, key), "annotation", None)
    text = note if isinstance(note, str) else getattr(note, "__name__", "")
    return ("true" if value else "false") if text == "str" else value


def call_with_options(kind: str, name: str, fn: Callable[..., Any], /, *args: Any,
                      _fixed: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Call ``fn`` turning a bad keyword option into a one-line :class:`UserError`; ``_fixed``
    names arguments the caller supplies itself (a model's ``num_classes``), left out of the
    "valid options" a user may set."""
    options = keyword_options(fn)
    kwargs = {k: _word(fn, k, v) for k, v in kwargs.items()}
    if options is not None:
        accepted, keyword = options
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            shown = [k for k in keyword if k not in _fixed]
            raise UserError(
                f"{kind} {name!r} has no option(s) {', '.join(map(repr, bad))}; "
                f"valid options: {', '.join(shown) or '(none)'}"
            )
    for k, v in kwargs.items():
        if k not in _fixed:
            _check_type(kind, name, fn, k, v)
    return fn(*args, **kwargs)


__all__ += ["call_with_options", "keyword_options"]
