"""The ``studio`` command: the click group, its commands gathered from their modules, and the
one place where expected failures become one line and an exit code.

No storage or capture logic lives here or in any command module. Every expected failure
(``StudioError``, click usage errors) becomes one line on stderr and an exit code (2 for usage,
1 otherwise); only a bug prints a traceback.
"""

from __future__ import annotations

import sys
from typing import Optional

import click

from ..errors import StudioError
from .browse import logs, ls
from .check import check
from .maintenance import cache, gc, sync
from .queue import queue_run, queue_status, worker
from .records import delete, get, list_, show
from .run import run
from .stop import stop
from .tb import tb
from .ui import ui

__all__ = ["cli", "main"]

_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=_SETTINGS)
@click.option("--config", "config_path", metavar="FILE", help="Config file (default $STUDIOML_HOME/config.yaml).")
@click.option("--store", metavar="URL", help="Store URL: a path, file://, s3://, gs:// or sftp://.")
@click.version_option(package_name="studio-run", prog_name="studio")
def cli(config_path: Optional[str], store: Optional[str]) -> None:
    """Run training scripts and keep every file they read and write, versioned."""


# Commands, in the order `studio --help` lists them (click sorts them by name).
cli.add_command(run)
cli.add_command(stop)
cli.add_command(list_)
cli.add_command(show)
cli.add_command(get)
cli.add_command(ls)
cli.add_command(logs)
cli.add_command(delete)
cli.add_command(gc)
cli.add_command(sync)
cli.add_command(cache)
cli.add_command(check)
cli.add_command(tb)
cli.add_command(worker)
cli.add_command(queue_status)
cli.add_command(queue_run)
cli.add_command(ui)


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
