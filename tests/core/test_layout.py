"""Core's shape: no import cycle, the records module is a leaf, the public names resolve."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import destinations

CORE = Path(destinations.__file__).parent
PACKAGE = "destinations"


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(CORE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module of the package this file imports: at module level, inside functions,
    and under ``if TYPE_CHECKING:`` (the strict graph: a cycle through type-only imports is
    still a cycle of dependencies)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith(PACKAGE + "."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                # `from . import _records` imports a module, not a name of the package
                modules = {f"{target}.{a.name}" for a in node.names}
                modules = {m for m in modules if _exists(m)}
                found.update(modules)
                if len(modules) < len(node.names):
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (CORE / rel).with_suffix(".py").exists() or (CORE / rel / "__init__.py").exists()


def import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(CORE.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None. Importing a package's
    submodule runs the package's ``__init__`` first; that implicit edge is not counted, the
    package ``destinations`` itself loads its names lazily."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == PACKAGE:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = walk(start)
            if cycle:
                return cycle
    return None


def test_core_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the walk saw the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_records_import_only_errors_and_templates() -> None:
    imported = import_graph()["destinations._records"]
    # and, for type checkers only, the DestinationType it annotates
    assert imported - {"destinations.plugin"} == {"destinations._errors", "destinations._template"}


PINNED_ALL = [
    "CODES",
    "Committed",
    "CommonFields",
    "DeliveryError",
    "DeliveryProgress",
    "DeliveryReport",
    "Destination",
    "DestinationStatus",
    "DestinationType",
    "DestinationsError",
    "EndpointNotAllowed",
    "InvalidDestination",
    "InvalidTemplate",
    "LogEntry",
    "ObjectKeyTooLong",
    "PathTemplate",
    "PluginLoadError",
    "ResultFile",
    "ResultSet",
    "RetryPolicy",
    "SecretsUnreadable",
    "SourceUnreadable",
    "Store",
    "StoreError",
    "StoreOptions",
    "UnknownType",
    "VerificationFailed",
    "VerificationReport",
    "available_types",
    "deliver",
    "expand_prefix",
    "get_type",
    "hookimpl",
    "is_transient",
    "needs_verification",
    "object_key",
    "open_store",
    "parse_destination",
    "register_plugin",
    "unregister_plugin",
    "verify",
    "verify_then_commit",
]


def test_public_names_are_pinned_and_every_one_resolves() -> None:
    assert destinations.__all__ == PINNED_ALL
    assert sorted(dir(destinations)) == PINNED_ALL
    for name in destinations.__all__:
        assert getattr(destinations, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from destinations import *", namespace)
    assert set(PINNED_ALL) <= set(namespace)


def test_errors_are_part_of_the_tree_and_builtins_where_they_fit() -> None:
    from destinations import DestinationsError, SecretsUnreadable, StoreError

    assert issubclass(SecretsUnreadable, DestinationsError)
    timeout = StoreError("timeout", "no answer")
    denied = StoreError("access_denied", "no", status=403)
    refused = StoreError("endpoint_unreachable", "refused")
    assert isinstance(timeout, TimeoutError) and timeout.code == "timeout"
    assert isinstance(denied, PermissionError) and denied.status == 403
    assert isinstance(refused, ConnectionError)
    assert not isinstance(StoreError("provider_error", "x"), OSError)
    for error in (timeout, denied, refused):
        assert isinstance(error, StoreError) and isinstance(error, DestinationsError)
        assert str(error).startswith(f"{error.code}: ")
        assert repr(error) == f"StoreError({error.code!r}, {error.message!r})"


def test_listing_types_imports_neither_pydantic_nor_pluggy_in_a_fresh_process() -> None:
    code = (
        "import sys, destinations; destinations.available_types(); "
        "print(sorted(m for m in ('pydantic', 'pluggy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_core_module_imports_on_its_own() -> None:
    for name in import_graph():
        if ".migrations" in name or name in ("destinations.__main__", "destinations.celery.app"):
            # alembic's scripts, `python -m destinations` and `celery -A destinations.celery.app`
            # are run, not imported (the last builds an app from the broker setting)
            continue
        importlib.import_module(name)
