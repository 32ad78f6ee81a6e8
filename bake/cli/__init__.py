"""The `bake` command line, over bake.api. `base.py`: what a command is (one unit: arguments, run,
render) and the registry; `commands.py`: the commands; `render.py`: the renderers several commands
share; `main.py`: the parser built from the registry, the dispatch and the exit codes (0 ok, 1 a
failed verification, 2 bad input, 3 a bug in bake)."""

from .main import main, parser

__all__ = ["main", "parser"]
