"""The plugin host: entry points read lazily, plugins imported on first use, once."""

from __future__ import annotations

import os
import threading
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from ._errors import PluginLoadError, UnknownType

if TYPE_CHECKING:
    import pluggy

    from .plugin import DestinationType

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "available_types", "get_type", "host"]

ENTRY_POINT_GROUP = "destinations"
#: Comma-separated type names to ignore, e.g. to shadow a broken or unwanted plugin.
DISABLE_ENV = "DESTINATIONS_DISABLE_PLUGINS"


class PluginHost:
    """Owns the pluggy manager and the registry of destination types."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._types: dict[str, DestinationType] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        # Imported here, not at module level: listing types must stay cheap (no pydantic).
        import pluggy

        from . import hookspecs

        self.pm: pluggy.PluginManager = pluggy.PluginManager("destinations")
        self.pm.add_hookspecs(hookspecs)
        self.pm.hook.destinations_register_types.call_historic(kwargs={"register": self._register})

    def _register(self, dtype: DestinationType) -> None:
        from .plugin import DestinationType

        if not isinstance(dtype, DestinationType):
            raise TypeError(f"register() takes a DestinationType, not {type(dtype).__name__}")
        existing = self._types.get(dtype.name)
        if existing is not None and existing is not dtype:
            raise ValueError(f"destination type {dtype.name!r} is already registered")
        self._types[dtype.name] = dtype

    def entry_points(self) -> dict[str, EntryPoint]:
        with self._lock:
            if self._entry_points is None:
                self._entry_points = _installed_entry_points()
            return self._entry_points

    def type_names(self) -> list[str]:
        with self._lock:
            return sorted(set(self.entry_points()) | set(self._types))

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object directly (an embedding service's own hooks or types)."""
        with self._lock:
            if not self.pm.is_registered(plugin):
                self.pm.register(plugin, name=name)
                self.pm.check_pending()

    def get(self, name: str) -> DestinationType:
        with self._lock:
            dtype = self._types.get(name)
            if dtype is not None:
                return dtype
            ep = self.entry_points().get(name)
            if ep is None:
                raise UnknownType(name, self.type_names())
            dist = ep.dist.name if ep.dist is not None else "the distribution providing it"
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"destination type {name!r} is provided by {dist} (entry point "
                    f"{ep.value!r}), which failed to import ({type(exc).__name__}: {exc}); "
                    f"install or repair it: pip install {dist}"
                ) from exc
            self.register_plugin(module, name=f"{dist}:{ep.value}")
            dtype = self._types.get(name)
            if dtype is None:
                raise PluginLoadError(
                    f"{dist} (entry point {ep.value!r}) was imported but registered no type "
                    f"named {name!r}"
                )
            return dtype


def _installed_entry_points() -> dict[str, EntryPoint]:
    disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",")}
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in disabled:
            found.setdefault(ep.name, ep)
    return found


_listed: dict[str, EntryPoint] | None = None
_host: PluginHost | None = None
_host_lock = threading.Lock()


def host() -> PluginHost:
    """The process-wide plugin host, created on first use."""
    global _host
    if _host is None:
        with _host_lock:
            if _host is None:
                _host = PluginHost()
    return _host


def available_types() -> list[str]:
    """Installed destination types, sorted. Reads entry-point names; imports no plugin
    (nor pluggy or pydantic, until a type is used)."""
    global _listed
    if _host is not None:
        return _host.type_names()
    if _listed is None:
        _listed = _installed_entry_points()
    return sorted(_listed)


def get_type(name: str) -> DestinationType:
    """The registered type ``name``, importing its plugin on first use."""
    return host().get(name)
