"""The endpoint guard for plugins whose SDK runs on requests (azure-storage-blob, oss2,
google-auth). Core never imports this module (it imports requests)::

    from destinations.requests_guard import GuardedAdapter

    session.mount("https://", GuardedAdapter(guard_label="my_endpoint", pool_maxsize=10))
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter

from .http_guard import guarded_pool_classes

__all__ = ["GuardedAdapter"]


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connections pass the endpoint guard; ``guard_label`` names
    the endpoint field in refusals."""

    def __init__(self, *args: Any, guard_label: str, **kwargs: Any) -> None:
        self.guard_label = guard_label  # before super().__init__, which builds the pools
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = guarded_pool_classes(self.guard_label)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = guarded_pool_classes(self.guard_label)
        return manager
