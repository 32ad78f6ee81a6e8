"""What every command shares: the registry of commands, the common options and the help layout.

A command is one unit: a `Command` subclass in bake.cli.commands with its name, help, examples, its
arguments, `run` (the API call, returning a result) and `render` (the result as text); `--json`
prints the result itself. The parser, the dispatch and `bake --help` read `COMMANDS`.
"""

from __future__ import annotations

import argparse
import json
from typing import ClassVar


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default and keeps the examples' line breaks."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help  # "(default: None)" says nothing
        return super()._get_help_string(action)


class Command:
    name: ClassVar[str]
    help: ClassVar[str]
    examples: ClassVar[tuple[str, ...]] = ()  # `bake ...` lines, each parsed by the tests
    trust: ClassVar[bool] = True  # takes --trust-remote-code (it may load a model)
    device: ClassVar[bool] = False  # takes --device (it runs forward passes)
    budget: ClassVar[bool] = False  # takes --max-memory as per-device budgets (it loads whole models)
    nested: ClassVar[bool] = False  # has sub-commands, which take the common options

    def arguments(self, sp: argparse.ArgumentParser) -> None:
        """Add this command's own arguments."""

    def run(self, args, progress: bool):
        """Do the work (through bake.api); return the result `--json` prints and `render` formats."""
        raise NotImplementedError

    def render(self, result, args) -> str:
        return json.dumps(result, indent=2, default=as_json)


COMMANDS: dict[str, Command] = {}


def register(cls: type[Command]) -> type[Command]:
    if cls.name in COMMANDS:
        raise RuntimeError(f"command {cls.name!r} is registered twice")
    COMMANDS[cls.name] = cls()
    return cls


def epilog(examples) -> str | None:
    return "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None


def common(sp: argparse.ArgumentParser, trust: bool = True, device: bool = False, budget: bool = False) -> None:
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--quiet", "-q", action="store_true", help="no progress bars, only the result")
    sp.add_argument("--progress", action="store_true",
                    help="show progress bars even when stderr is not a terminal (default: only on a terminal)")
    if trust:
        sp.add_argument("--trust-remote-code", action="store_true",
                        help="let transformers run Python code shipped with the model (never the default; "
                             "a recipe or a folder cannot ask for it)")
    if device:
        sp.add_argument("--device", metavar="DEVICE",
                        help="where the forward passes run: auto (default: a CUDA GPU, else Apple's MPS, else the "
                             "CPU), cpu, cuda, cuda:N or mps; baking itself always rewrites the files on the CPU")
    if budget:
        sp.add_argument("--max-memory", dest="memory_budget", metavar="BUDGETS",
                        help="memory each device may hold, e.g. cpu=8GiB or cuda:0=70GiB,cpu=100GiB (one size: the "
                             "CPU's); a model larger than that is spread over them by accelerate, the rest on disk")


def as_json(obj):
    """json.dumps' fallback: a typed result as the JSON object it is stored as; a numpy number as a
    float; a path as text."""
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "__float__"):
        return float(obj)
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
