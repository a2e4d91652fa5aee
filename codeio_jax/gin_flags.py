"""T5X-style gin flags: `--gin_file` (repeatable), `--gin_search_paths`, `--gin.NAME=VALUE`.

Files are looked up as given, then under each search path, then under the
project's `gin/` folder, so `--gin_file data/codeio_pp.gin` works from anywhere.
A binding that names no configurable fails at once, with the name gin did not know.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import gin

PROJECT_GIN = Path(__file__).resolve().parents[1] / "gin"


class GinFlagError(ValueError):
    """A gin file that cannot be found or a binding gin does not accept."""


def parse_gin(files: Sequence[str], search_paths: str, bindings: Sequence[str]) -> None:
    """Clear gin's state, then apply the files in order and the bindings after them."""
    gin.clear_config()
    roots = [Path(p) for p in search_paths.split(",") if p] + [PROJECT_GIN]
    for root in roots:
        gin.add_config_file_search_path(str(root))
    resolved = [_find(name, roots) for name in files]
    # gin logs an error for every place it looks for an include before the one
    # that has it; a missing include still raises, so the log adds only noise.
    logging.disable(logging.ERROR)
    try:
        gin.parse_config_files_and_bindings(resolved, bindings, finalize_config=False)
    except (ValueError, KeyError, SyntaxError, IOError) as exc:
        raise GinFlagError(_first_line(exc)) from None
    finally:
        logging.disable(logging.NOTSET)


def _find(name: str, roots: Sequence[Path]) -> str:
    candidates = [Path(name)] + [root / name for root in roots]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise GinFlagError(f"gin file {name!r} not found (looked in: {', '.join(str(c) for c in candidates)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + " ..."
