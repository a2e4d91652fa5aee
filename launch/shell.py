"""Shell words for the launchers: quoting that stays readable when nested, and running commands.

A launcher builds every command as a list of arguments. Printed (a dry run), each
argument is quoted so that a POSIX shell, and shlex.split, read back exactly that list.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Sequence

Command = list[str]
# Characters a shell still expands inside double quotes (`!` only interactively, but a
# printed command is meant to be pasted), and which shlex.split would read differently.
_EXPANDS = set("$`!")


class LaunchError(ValueError):
    """A launch that cannot work as asked; the message says what to change."""


def quote(word: str) -> str:
    """shlex.quote, except a word holding ' (a gin string, a nested command) and nothing
    that expands goes in double quotes: "--gin.MODEL_DIR='runs/x'", not '--gin.MODEL_DIR='"'"'runs/x'"'"''."""
    if "'" in word and not _EXPANDS & set(word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return shlex.quote(word)


def render(command: Sequence[str]) -> str:
    """One line that a shell splits back into `command`."""
    return " ".join(quote(word) for word in command)


def execute(commands: Sequence[Command], dry_run: bool) -> None:
    """Print each command (dry run), or echo it to stderr and run it with its output
    streaming, stopping at the first that fails (CalledProcessError; LaunchError when the
    program is not installed)."""
    for command in commands:
        if dry_run:
            print(render(command), flush=True)
        else:
            print(f"+ {render(command)}", file=sys.stderr, flush=True)
            try:
                subprocess.run(command, check=True)
            except FileNotFoundError:
                raise LaunchError(f"{command[0]} is not installed (not on PATH)") from None


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The launcher's own flags, and everything after the first `--` (for codeio-jax)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]
