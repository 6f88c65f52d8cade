"""The ``destinations`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from ._cli_common import (
    database_url_option,
    deprecated_alias,
    destination_option,
    fail_verification,
    load_stored,
    output_option,
    param_option,
    parse_or_exit,
    spec_option,
    write_output,
)
from ._errors import PluginLoadError, VerificationFailed
from ._plugins import available_types, get_type
from ._spec import COMMON_FIELDS, destination_model
from ._verify import verify as verify_destination

if TYPE_CHECKING:
    from ._records import DeliveryProgress, DestinationStatus


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


def _given(
    params: tuple[str, ...], spec_file: str | None, deprecated_json: str | None
) -> tuple[bool, str | None]:
    """Whether an inline destination was given, and its spec file (the deprecated ``--json``
    input flag of ``verify`` and ``deliver`` is ``--spec``)."""
    if spec_file is not None and deprecated_json is not None:
        raise click.UsageError("give --spec FILE (--json FILE is its deprecated name), not both")
    spec = spec_file if spec_file is not None else deprecated_json
    return bool(params) or spec is not None, spec


@main.command()
@param_option
@spec_option
@destination_option(multiple=False)
@database_url_option
@output_option
@deprecated_alias("--json", "--spec", "json")
@click.option("--timeout", default=30.0, show_default=True, help="Overall deadline, seconds.")
def verify(
    params: tuple[str, ...],
    spec_file: str | None,
    destination_ids: str | None,
    database_url: str | None,
    output: str | None,
    json_deprecated: str | None,
    timeout: float,
) -> None:
    """Put and delete a probe object; exit 0 if both worked, 1 if not, 2 on bad input.

    The destination: -p KEY=VALUE fields, --spec FILE (JSON), or --destination ID (stored
    by the HTTP API).
    """
    inline, spec = _given(params, spec_file, json_deprecated)
    if inline == (destination_ids is not None):
        raise click.UsageError(
            "give the destination with -p KEY=VALUE / --spec FILE, or --destination ID "
            "(not both)"
        )
    if destination_ids is not None:
        destination = load_stored((destination_ids,), database_url)[0]
    else:
        destination = parse_or_exit(params, spec, flag="--spec")
    try:
        report = verify_destination(destination, timeout=timeout)
    except VerificationFailed as exc:
        write_output(
            output,
            {"verified": False, "type": destination.type, "step": exc.step, "code": exc.code,
             "provider_code": exc.provider_code, "message": exc.message},
        )
        fail_verification(exc)
    data = {
        "verified": True,
        "type": destination.type,
        "probe_key": report.probe_key,
        "connect_ms": round(report.open_seconds * 1e3, 3),
        "put_ms": round(report.put_seconds * 1e3, 3),
        "delete_ms": round(report.delete_seconds * 1e3, 3),
        "total_ms": round(report.total_seconds * 1e3, 3),
        "warnings": list(report.warnings),
    }
    if not write_output(output, data):
        click.echo(
            f"verified {destination.type} destination: probe {report.probe_key} "
            f"put {report.put_seconds * 1000:.1f} ms, delete {report.delete_seconds * 1000:.1f} "
            f"ms, total {report.total_seconds * 1000:.1f} ms"
        )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


class _OnceFilter(logging.Filter):
    """Drops the delivery log's final "failed at ..." line of a destination: the command's
    summary prints that failure once, on stdout. Retries and other warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        text = args[-1] if isinstance(args, tuple) and args else ""
        return not (isinstance(text, str) and text.startswith("failed at "))


def _delivery_log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.addFilter(_OnceFilter())
    logger = logging.getLogger("destinations")
    logger.addHandler(handler)
    logger.propagate = False


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--collection-id", required=True, help="The result set's collection id.")
@click.option("--collection-name", required=True, help="The result set's collection name.")
@click.option("--result-set-id", required=True, help="The result set's id.")
@param_option
@spec_option
@destination_option(multiple=True)
@database_url_option
@output_option
@deprecated_alias("--json", "--spec", "json")
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
    spec_file: str | None,
    destination_ids: tuple[str, ...],
    database_url: str | None,
    output: str | None,
    json_deprecated: str | None,
    concurrency: int,
) -> None:
    """Upload FILE... as one result set to each destination given.

    Destinations: stored ones with --destination ID (repeatable) and/or one given inline
    with -p KEY=VALUE / --spec FILE. Exit 0 if every enabled destination succeeded, 1 if any
    failed, 2 on bad input (a missing FILE included).
    """
    from ._deliver import deliver as deliver_result_set
    from ._errors import SourceUnreadable
    from ._records import ResultFile, ResultSet

    inline, spec = _given(params, spec_file, json_deprecated)
    if not inline and not destination_ids:
        raise click.UsageError(
            "give a destination: -p KEY=VALUE / --spec FILE, and/or --destination ID"
        )
    for f in files:
        if not Path(f).is_file():
            reason = "is a directory" if Path(f).is_dir() else "does not exist"
            raise click.UsageError(f"result file {f!r} {reason}")
    try:
        result_set = ResultSet(
            collection_id,
            collection_name,
            result_set_id,
            [ResultFile(Path(f).name, f) for f in files],
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    destinations = load_stored(destination_ids, database_url) if destination_ids else []
    if inline:
        destinations.append(parse_or_exit(params, spec, flag="--spec"))

    _delivery_log_to_stderr()
    enabled = sum(1 for d in destinations if d.enabled)
    try:
        if sys.stderr.isatty() and enabled and output != "-":
            total = sum(Path(f).stat().st_size for f in files) * enabled
            with _ProgressBar(total, len(files) * enabled) as bar:
                report = deliver_result_set(
                    result_set, destinations, concurrency=concurrency, on_progress=bar.update
                )
        else:
            report = deliver_result_set(result_set, destinations, concurrency=concurrency)
    except SourceUnreadable as exc:  # removed between the check above and the upload
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)

    data = {
        "ok": report.ok,
        "result_set_id": result_set_id,
        "destinations": [
            {
                "id": s.destination.id,
                "name": s.destination.name,
                "type": s.destination.type,
                **s.to_dict(),
                "error": None
                if s.error is None
                else {"step": s.error.step, "code": s.error.code, "message": s.error.message,
                      "key": s.error.key, "provider_code": s.error.provider_code},
            }
            for s in report
        ],
    }
    if not write_output(output, data):
        for status in report:
            _print_status(status)
    sys.exit(0 if report.ok else 1)


def _print_status(status: DestinationStatus) -> None:
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
    HTTP API's web and database libraries (an optional extra). Its ``--help`` works without
    the extra: it then says what to install."""

    def __init__(self, name: str, target: str, help: str, *, extra: str = "api") -> None:
        super().__init__(name, help=help, short_help=help)
        self._target_path = target
        self._extra = extra

    def _missing(self, exc: ModuleNotFoundError) -> str:
        what = {"api": "the HTTP API extra", "celery": "the scale-out extra"}[self._extra]
        return (
            f"`destinations {self.name}` needs {what} ({exc.name} is missing): "
            f"pip install 'destinations[{self._extra}]'"
        )

    def _target(self) -> click.Command:
        import importlib

        module, _, attr = self._target_path.partition(":")
        try:
            command: click.Command = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            raise click.ClickException(self._missing(exc)) from exc
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            target = self._target()
        except click.ClickException as exc:
            if "--help" not in args:
                raise
            click.echo(f"Usage: destinations {self.name} [OPTIONS]\n\n  {self.help}\n")
            click.echo(f"  Not available here: {exc.message}")
            sys.exit(0)
        return target.make_context(info_name, args, parent=parent, **extra)


main.add_command(_LazyCommand("serve", "destinations.api.cli:serve", "Run the HTTP API."))
main.add_command(_LazyCommand("keys", "destinations.api.cli:keys", "Manage API keys."))
main.add_command(
    _LazyCommand(
        "webhooks", "destinations.api.cli:webhooks", "Manage completion webhooks."
    )
)
main.add_command(
    _LazyCommand(
        "doctor",
        "destinations._doctor:doctor",
        "Check the operator's set-up: database, encryption keys, plugins, guard, broker.",
    )
)


from ._bench import bench  # noqa: E402

main.add_command(bench)

main.add_command(
    _LazyCommand(
        "worker",
        "destinations.celery.cli:worker",
        "Run a Celery worker for delivery tasks.",
        extra="celery",
    )
)
