"""The plugin host: entry points read lazily, plugins imported on first use, once.

Nothing outside this module touches the pluggy manager: every call into plugins goes through
:class:`PluginHooks`, one typed method per hook (as tox 4 wraps pluggy).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from ._errors import PluginLoadError, UnknownType

if TYPE_CHECKING:
    import pluggy

    from ._records import Destination, DestinationStatus, ResultSet
    from .plugin import DestinationType

__all__ = [
    "ENTRY_POINT_GROUP",
    "OBSERVER_GROUP",
    "PluginHooks",
    "PluginHost",
    "available_types",
    "get_type",
    "host",
]

log = logging.getLogger("destinations.plugins")

#: Storage types: the entry-point *name* is the type name, the value the plugin module.
ENTRY_POINT_GROUP = "destinations"
#: Hook-only plugins (observers): any name; loaded once, on the first delivery.
OBSERVER_GROUP = "destinations.observers"
#: Comma-separated type (or observer entry-point) names to ignore.
DISABLE_ENV = "DESTINATIONS_DISABLE_PLUGINS"


class PluginHooks:
    """Typed calls into the plugins, one method per hook in :mod:`destinations.hookspecs`.

    Observer hooks call each implementation on its own: one that raises is logged (by its
    exception type only: its message may echo anything it saw) and the others still run.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm

    def register_types(self, register: Callable[[DestinationType], None]) -> None:
        self._pm.hook.destinations_register_types.call_historic(kwargs={"register": register})

    def file_delivered(
        self, *, result_set: ResultSet, destination: Destination, key: str, size: int
    ) -> None:
        self._each(
            "destinations_file_delivered",
            {"result_set": result_set, "destination": destination, "key": key, "size": size},
        )

    def delivery_finished(self, *, result_set: ResultSet, status: DestinationStatus) -> None:
        self._each("destinations_delivery_finished", {"result_set": result_set, "status": status})

    def _each(self, hook_name: str, kwargs: dict[str, Any]) -> None:
        caller = getattr(self._pm.hook, hook_name)
        # pluggy's own call order (last registered first), each call isolated.
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception as exc:
                log.warning(
                    "observer %s of %s raised %s; delivery goes on",
                    impl.plugin_name,
                    hook_name,
                    type(exc).__name__,
                )


class PluginHost:
    """Owns the pluggy manager and the registry of destination types."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._types: dict[str, DestinationType] = {}
        self._entry_points: dict[str, EntryPoint] | None = None
        self._observers_loaded = False
        # Imported here, not at module level: listing types must stay cheap (no pydantic).
        import pluggy

        from . import hookspecs

        self._pm = pluggy.PluginManager("destinations")
        self._pm.add_hookspecs(hookspecs)
        self.hooks = PluginHooks(self._pm)
        self.hooks.register_types(self._register)

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

    def distribution_of(self, name: str) -> str | None:
        """The installed distribution providing type ``name``, if an entry point names it."""
        ep = self.entry_points().get(name)
        return ep.dist.name if ep is not None and ep.dist is not None else None

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object directly (an embedding service's own hooks or types)."""
        with self._lock:
            if not self._pm.is_registered(plugin):
                self._pm.register(plugin, name=name)
                self._pm.check_pending()

    def unregister_plugin(self, plugin: object) -> None:
        """Remove a plugin object registered with :meth:`register_plugin`, and the types it
        registered."""
        with self._lock:
            if not self._pm.is_registered(plugin):
                return
            self._pm.unregister(plugin)
            registers = getattr(plugin, "destinations_register_types", None)
            if callable(registers):
                offered: list[DestinationType] = []
                registers(register=offered.append)
                for dtype in offered:
                    if self._types.get(dtype.name) is not None:
                        del self._types[dtype.name]

    def load_observers(self) -> None:
        """Import and register every ``destinations.observers`` entry point, once.

        An observer module that fails to import is logged and skipped: it never stops a
        delivery.
        """
        with self._lock:
            if self._observers_loaded:
                return
            self._observers_loaded = True
            for ep in _group(OBSERVER_GROUP):
                dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
                try:
                    module = ep.load()
                    self.register_plugin(module, name=f"{dist}:{ep.value}")
                except Exception as exc:
                    log.warning(
                        "observer %r of %s failed to load (%s); deliveries go on without it",
                        ep.name,
                        dist,
                        type(exc).__name__,
                    )

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


def _disabled() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _group(group: str) -> Iterable[EntryPoint]:
    disabled = _disabled()
    return [ep for ep in entry_points(group=group) if ep.name not in disabled]


def _installed_entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in _group(ENTRY_POINT_GROUP):
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
