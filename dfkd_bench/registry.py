"""One small generic registry (timm-style) for methods, datasets and models."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with the one-line description shown by the listing commands."""

    name: str
    obj: T
    description: str


class Registry(Generic[T]):
    """Maps names to objects; lookups of unknown names fail with the list of choices."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._loader = loader
        self._loaded = loader is None

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator that registers an object under `name` (lower-case, unique)."""

        def decorator(obj: T) -> T:
            self.add(name, obj, description)
            return obj

        return decorator

    def add(self, name: str, obj: T, description: str = "") -> None:
        """Register `obj`; re-registering the same object (a re-imported plugin) is allowed."""
        key = name.lower()
        existing = self._entries.get(key)
        if existing is not None and getattr(existing.obj, "__qualname__", None) != getattr(obj, "__qualname__", object()):
            raise ValueError(f"{self.kind} {key!r} is already registered")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[key] = Entry(key, obj, description)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Inside the block, register freely: the registry is restored as it is now when it ends (tests,
        notebooks trying throwaway methods)."""
        self._ensure_loaded()
        saved = dict(self._entries)
        try:
            yield
        finally:
            self._entries.clear()
            self._entries.update(saved)

    def rediscover(self) -> None:
        """Run discovery (entry points, built-ins) again on the next lookup, e.g. after installing a plugin."""
        self._loaded = self._loader is None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise a UserError naming the choices."""
        self._ensure_loaded()
        key = name.strip().lower()
        if key not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self._entries[key].obj

    def names(self) -> list[str]:
        """Sorted registered names."""
        self._ensure_loaded()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Registered entries, sorted by name."""
        self._ensure_loaded()
        return [self._entries[k] for k in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
