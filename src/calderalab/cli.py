"""The `calderalab` command: one thin subcommand per job. Progress bars and printing live here.

Library code raises `CalderalabError` (or ValueError) with a message that names the problem
and the fix; `main()` prints it without a traceback and exits 2.
"""

from __future__ import annotations

import sys

import typer

from calderalab.errors import CalderalabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=__doc__.splitlines()[0])


@app.callback()
def _root() -> None:
    """calderalab: CALDERA compression, layer sensitivity and Goodhart Gap evaluation."""


@app.command()
def version() -> None:
    """Print the calderalab version."""
    from calderalab import __version__

    typer.echo(__version__)


# ---------------------------------------------------------------- models commands
# (section owned by the models work; add commands below this line)



# ---------------------------------------------------------------- compression commands
# (section owned by the compression work; add commands below this line)



# ---------------------------------------------------------------- evaluation commands
# (section owned by the evaluation work; add commands below this line)



# ---------------------------------------------------------------- statistics commands
# (section owned by the statistics work; add commands below this line)



# ---------------------------------------------------------------- sensitivity commands
# (section owned by the sensitivity work; add commands below this line)



# ---------------------------------------------------------------- experiments commands
# (section owned by the experiments work; add commands below this line)



# ---------------------------------------------------------------- report commands
# (section owned by the report work; add commands below this line)



# ---------------------------------------------------------------- study commands
# (section owned by the study work; add commands below this line)



def main() -> None:
    try:
        app()
    except (CalderalabError, ValueError, FileNotFoundError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(2)
