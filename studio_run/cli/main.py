"""The ``studio`` command: the click group, its commands gathered from their modules, and the
one place where expected failures become one line and an exit code.

No storage or capture logic lives here or in any command module. Every expected failure
(``StudioError``, click usage errors) becomes one line on stderr and an exit code (2 for usage,
1 otherwise); only a bug prints a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

import click

from ..errors import StudioError

__all__ = ["cli", "main"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Every command: its name -> (module of this package, attribute). A command's module is imported
# only when that command runs (or ``--help`` lists them all): ``studio run`` no longer pays for
# the modules of ``ls``, ``queue`` or ``ui`` (about 50 ms of imports on every run).
_COMMANDS = {
    "run": ("run", "run"), "stop": ("stop", "stop"), "list": ("records", "list_"),
    "show": ("records", "show"), "get": ("records", "get"), "ls": ("browse", "ls"),
    "logs": ("browse", "logs"), "delete": ("records", "delete"), "gc": ("maintenance", "gc"),
    "sync": ("maintenance", "sync"), "cache": ("maintenance", "cache"), "check": ("check", "check"),
    "tb": ("tb", "tb"), "worker": ("queue", "worker"), "queue": ("queue", "queue_status"),
    "_queue-run": ("queue", "queue_run"), "ui": ("ui", "ui"),
}


class _LazyGroup(click.Group):
    """A click group that imports a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        where = _COMMANDS.get(cmd_name)
        if where is None:
            return None
        module = importlib.import_module(f"{__package__}.{where[0]}")
        command: click.Command = getattr(module, where[1])
        return command


@click.group(cls=_LazyGroup, context_settings=_SETTINGS)
@click.option("--config", "config_path", metavar="FILE", help="Config file (default $STUDIOML_HOME/config.yaml).")
@click.option("--store", metavar="URL", help="Store URL: a path, file://, s3://, gs:// or sftp://.")
@click.version_option(package_name="studio-run", prog_name="studio")
def cli(config_path: Optional[str], store: Optional[str]) -> None:
    """Run training scripts and keep every file they read and write, versioned."""


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: run the CLI, turning expected errors into one line and a code."""
    try:
        result = cli.main(args=argv, prog_name="studio", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "studio"
        click.echo(f"studio: error: {exc.format_message()} (see `{command} --help`)", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("studio: aborted", err=True)
        sys.exit(130)
    except StudioError as exc:
        click.echo(f"studio: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"studio: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("studio: interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
