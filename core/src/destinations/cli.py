"""The ``destinations`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ._errors import DestinationsError, InvalidDestination, PluginLoadError, VerificationFailed
from ._plugins import available_types, get_type
from ._spec import COMMON_FIELDS, parse_destination
from ._verify import verify as verify_destination


@click.group()
@click.version_option(package_name="destinations")
def main() -> None:
    """Deliver result sets to storage your customers own."""


def _type_info(name: str) -> dict[str, Any]:
    dtype = get_type(name)
    secrets = dtype.secret_fields

    def describe(field: str) -> dict[str, Any]:
        info = dtype.fields.model_fields[field]
        return {
            "name": field,
            "required": info.is_required(),
            "secret": field in secrets,
            "description": info.description or "",
        }

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


def _load_params(params: tuple[str, ...], json_file: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if json_file is not None:
        text = sys.stdin.read() if json_file == "-" else Path(json_file).read_text()
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"--json {json_file}: not valid JSON ({exc.msg})") from exc
        if not isinstance(loaded, dict):
            raise click.UsageError(f"--json {json_file}: expected a JSON object")
        data.update(loaded)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param {item.split('=')[0]!r}: expected KEY=VALUE")
        data[key.strip()] = value
    data.setdefault("name", "command line")
    data.setdefault("enabled", True)
    return data


@main.command()
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A destination field, e.g. -p type=s3 -p s3_bucket_name=my-bucket.",
)
@click.option("--json", "json_file", metavar="FILE", help="Destination fields as JSON (- = stdin).")
@click.option("--timeout", default=30.0, show_default=True, help="Overall deadline, seconds.")
def verify(params: tuple[str, ...], json_file: str | None, timeout: float) -> None:
    """Put and delete a probe object; exit 0 if both worked, 1 if not, 2 on bad input."""
    if not params and json_file is None:
        raise click.UsageError("give the destination with --param KEY=VALUE or --json FILE")
    try:
        destination = parse_destination(_load_params(params, json_file))
    except InvalidDestination as exc:
        click.echo("invalid destination:", err=True)
        for field, message in exc.errors.items():
            click.echo(f"  {field}: {message}", err=True)
        sys.exit(2)
    except DestinationsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    try:
        report = verify_destination(destination, timeout=timeout)
    except VerificationFailed as exc:
        click.echo(f"verification failed: step={exc.step} code={exc.code}", err=True)
        if exc.provider_code:
            click.echo(f"provider code: {exc.provider_code}", err=True)
        click.echo(exc.message, err=True)
        sys.exit(1)
    click.echo(
        f"verified {destination.type} destination: probe {report.probe_key} "
        f"put {report.put_seconds * 1000:.1f} ms, delete {report.delete_seconds * 1000:.1f} ms, "
        f"total {report.total_seconds * 1000:.1f} ms"
    )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


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
