"""The ``destinations`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from ._cli_common import (
    database_url_option,
    fail_verification,
    load_stored,
    param_option,
    parse_or_exit,
)
from ._errors import PluginLoadError, VerificationFailed
from ._plugins import available_types, get_type
from ._spec import COMMON_FIELDS, destination_model
from ._verify import verify as verify_destination

if TYPE_CHECKING:
    from ._records import DeliveryProgress


@click.group()
@click.version_option(package_name="destinations")
def main() -> None:
    """Deliver result sets to storage your customers own."""


def _type_info(name: str) -> dict[str, Any]:
    """One type's fields as its full model documents them (the same text as OpenAPI)."""
    dtype = get_type(name)
    schema = destination_model(name).model_json_schema()
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))

    def describe(field: str) -> dict[str, Any]:
        prop = props.get(field, {})
        info: dict[str, Any] = {
            "name": field,
            "required": field in required,
            "secret": field in dtype.secret_fields,
            "description": prop.get("description", ""),
        }
        if "enum" in prop:
            info["enum"] = prop["enum"]
        if "default" in prop and prop["default"] not in (None, ""):
            info["default"] = prop["default"]
        return info

    return {
        "type": name,
        "description": dtype.description,
        "fields": [describe(f) for f in dtype.fields.model_fields],
    }


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def types(as_json: bool) -> None:
    """List installed destination types and their fields."""
    out: list[dict[str, Any]] = []
    for name in available_types():
        try:
            out.append(_type_info(name))
        except PluginLoadError as exc:
            out.append({"type": name, "error": str(exc), "fields": []})
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for entry in out:
        click.echo(f"{entry['type']}: {entry.get('description') or entry.get('error', '')}")
        for f in entry["fields"]:
            flags = ["required" if f["required"] else "optional"]
            if f["secret"]:
                flags.append("secret")
            click.echo(f"    {f['name']:<28} {', '.join(flags)}")
    click.echo(f"common fields: {', '.join(COMMON_FIELDS[1:])}")


@main.command()
@param_option
@click.option("--json", "json_file", metavar="FILE", help="Destination fields as JSON (- = stdin).")
@click.option("--timeout", default=30.0, show_default=True, help="Overall deadline, seconds.")
def verify(params: tuple[str, ...], json_file: str | None, timeout: float) -> None:
    """Put and delete a probe object; exit 0 if both worked, 1 if not, 2 on bad input."""
    if not params and json_file is None:
        raise click.UsageError("give the destination with --param KEY=VALUE or --json FILE")
    destination = parse_or_exit(params, json_file)
    try:
        report = verify_destination(destination, timeout=timeout)
    except VerificationFailed as exc:
        fail_verification(exc)
    click.echo(
        f"verified {destination.type} destination: probe {report.probe_key} "
        f"put {report.put_seconds * 1000:.1f} ms, delete {report.delete_seconds * 1000:.1f} ms, "
        f"total {report.total_seconds * 1000:.1f} ms"
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, readable=True)
)
@click.option("--collection-id", required=True, help="The result set's collection id.")
@click.option("--collection-name", required=True, help="The result set's collection name.")
@click.option("--result-set-id", required=True, help="The result set's id.")
@param_option
@click.option("--json", "json_file", metavar="FILE", help="One destination as JSON (- = stdin).")
@click.option(
    "--destination",
    "-d",
    "destination_ids",
    multiple=True,
    metavar="ID",
    help="A destination stored by the HTTP API, by id (repeatable; needs the api extra).",
)
@database_url_option
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Uploads in flight at once, across destinations and files.",
)
def deliver(
    files: tuple[str, ...],
    collection_id: str,
    collection_name: str,
    result_set_id: str,
    params: tuple[str, ...],
    json_file: str | None,
    destination_ids: tuple[str, ...],
    database_url: str | None,
    concurrency: int,
) -> None:
    """Upload FILE... as one result set to each destination given.

    Exit 0 if every enabled destination succeeded, 1 if any failed, 2 on bad input.
    """
    from ._deliver import deliver as deliver_result_set
    from ._records import ResultFile, ResultSet

    if (bool(params) or json_file is not None) == bool(destination_ids):
        raise click.UsageError(
            "give one destination with --param KEY=VALUE or --json FILE, or stored ones with "
            "--destination ID (not both)"
        )
    try:
        result_set = ResultSet(
            collection_id,
            collection_name,
            result_set_id,
            [ResultFile(Path(f).name, f) for f in files],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if destination_ids:
        destinations = load_stored(destination_ids, database_url)
    else:
        destinations = [parse_or_exit(params, json_file)]

    enabled = sum(1 for d in destinations if d.enabled)
    if sys.stderr.isatty() and enabled:
        total = sum(Path(f).stat().st_size for f in files) * enabled
        with _ProgressBar(total, len(files) * enabled) as bar:
            report = deliver_result_set(
                result_set, destinations, concurrency=concurrency, on_progress=bar.update
            )
    else:
        report = deliver_result_set(result_set, destinations, concurrency=concurrency)

    for status in report:
        d = status.destination
        who = f"{d.type} {d.name!r}" + (f" ({d.id})" if d.id else "")
        if status.status == "success":
            click.echo(
                f"success  {who}: {len(status.keys)} object(s), {status.bytes} bytes in "
                f"{status.seconds:.2f} s"
            )
        elif status.status == "skipped":
            click.echo(f"skipped  {who}: disabled")
        else:
            error = status.error
            assert error is not None
            where = f" of {error.key!r}" if error.key else ""
            provider = f", {error.provider_code}" if error.provider_code else ""
            click.echo(
                f"failed   {who} at {error.step}{where} ({error.code}{provider}): "
                f"{error.message}; {len(status.keys)} object(s) were written"
            )
    sys.exit(0 if report.ok else 1)


class _ProgressBar:
    """The terminal's byte progress bar (tqdm: bytes, rate, ETA), fed by this delivery's
    own ``on_progress`` events from worker threads. A retried put starts again at zero; the
    bar never moves back, it waits until the retry passes what was shown."""

    def __init__(self, total: int, files: int, *, out: TextIO | None = None) -> None:
        import threading

        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="delivering",
            file=sys.stderr if out is None else out,
            smoothing=0.1,
            dynamic_ncols=True,
        )
        self._lock = threading.Lock()
        self._shown: dict[tuple[int, str], int] = {}
        self._files = files
        self._finished: set[tuple[int, str]] = set()

    def update(self, event: DeliveryProgress) -> None:
        where = (id(event.destination), event.key)
        with self._lock:
            shown = self._shown.get(where, 0)
            if event.bytes_sent > shown:
                self._shown[where] = event.bytes_sent
                self._bar.update(event.bytes_sent - shown)
            if event.bytes_sent == event.bytes_total and where not in self._finished:
                self._finished.add(where)
                done = f"{len(self._finished)}/{self._files} files"
                self._bar.set_postfix_str(done, refresh=False)

    @property
    def shown(self) -> int:
        """Bytes the bar shows as sent."""
        return int(self._bar.n)

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


class _LazyCommand(click.Command):
    """A subcommand imported only when it runs, so `destinations types` never imports the
    HTTP API's web and database libraries (an optional extra)."""

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help, short_help=help)
        self._target_path = target

    def _target(self) -> click.Command:
        import importlib

        module, _, attr = self._target_path.partition(":")
        try:
            command: click.Command = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            raise click.ClickException(
                f"`destinations {self.name}` needs the HTTP API extra ({exc.name} is missing): "
                "pip install 'destinations[api]'"
            ) from exc
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        return self._target().make_context(info_name, args, parent=parent, **extra)


main.add_command(_LazyCommand("serve", "destinations.api.cli:serve", "Run the HTTP API."))
main.add_command(_LazyCommand("keys", "destinations.api.cli:keys", "Manage API keys."))


from ._bench import bench  # noqa: E402

main.add_command(bench)


class _LazyWorkerCommand(_LazyCommand):
    def _target(self) -> click.Command:
        try:
            return super()._target()
        except click.ClickException as exc:
            raise click.ClickException(
                "`destinations worker` needs the scale-out extra: "
                "pip install 'destinations[celery]'"
            ) from exc


main.add_command(
    _LazyWorkerCommand(
        "worker", "destinations.celery.cli:worker", "Run a Celery worker for delivery tasks."
    )
)
