"""The `dfkd-bench` command line: one small module per command group; `main` is the entry point, where
bad input gets one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import click

from ..errors import UserError
from .common import INVOCATION, cli

# the command groups register themselves on `cli` when imported
from . import calibrate, listing, results, run, sweep, teacher  # noqa: E402,F401


class OnceWarnings:
    """`warnings.showwarning` for one command: each warning (a train-size mismatch, failed checksums, a
    folder alias) as one `warning:` line on stderr, the first time its text comes up only."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        if text not in self.shown:
            self.shown.add(text)
            click.echo(f"warning: {text}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input gets one line on stderr and exit status 2, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    INVOCATION[:] = args
    warnings.showwarning = OnceWarnings()
    if not args:
        with click.Context(cli, info_name="dfkd-bench") as ctx:
            click.echo(cli.get_help(ctx))
        return
    try:
        cli.main(args=args, prog_name="dfkd-bench", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)
