"""The `calderalab` subcommands beside compress and sensitivity (in cli.py), one module per kind of job.

Each module lists its commands in COMMANDS (name -> function); `register` adds them to the app.
Commands only parse, call the library and print: the work and its checks live in the library.
"""

from __future__ import annotations

from typing import Any


def register(app: Any) -> None:
    from calderalab.commands import analysis, evaluation, experiments, models, profiles, tune

    for module in (models, evaluation, experiments, analysis, profiles, tune):
        for name, command in module.COMMANDS.items():
            app.command(name)(command)
