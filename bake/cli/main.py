"""`bake`'s entry point: the parser built from the commands' registry, the dispatch, and one rule for
errors (exit 0 ok, 1 a failed verification, 2 bad input with one line, 3 a bug in bake)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import __version__
from ..errors import BakeError, VerificationFailed, first_line
from ..files import interrupt, redact  # light: torch and transformers load only once a command runs
from . import commands  # noqa: F401  (each registers itself)
from .base import COMMANDS, Formatter, as_json, common, epilog
from .render import format_integrity


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bake", description="Compile AURA, steering, ablation and SAE-feature "
                                "interventions into checkpoints, verified against their hooks.",
                                formatter_class=Formatter, epilog=epilog([
                                    "bake plan recipes/smollm2-demo.yaml", "bake apply recipes/smollm2-demo.yaml",
                                    "bake eval out/smollm2-demo --suite toxicity,quality", "bake COMMAND --help"]))
    p.add_argument("--version", action="version", version=f"bake {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name in commands.__all__:
        cmd = next(c for c in COMMANDS.values() if type(c).__name__ == name)
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, formatter_class=Formatter,
                            epilog=epilog(cmd.examples))
        cmd.arguments(sp)
        if not cmd.nested:
            common(sp, trust=cmd.trust, device=cmd.device, budget=cmd.budget)
    return p


def main(argv=None) -> int:
    """The `bake` command. Run as the program (argv None), the signal handlers stay installed until
    the process exits, so no signal can end it with a traceback."""
    previous = interrupt.install()  # SIGTERM/SIGINT/SIGHUP unwind through the staging, which removes temp files
    streams = redact.install()  # no token or URL password reaches the terminal, tracebacks included
    out = sys.stdout
    args = None
    try:
        args = parser().parse_args(argv)
        from ..files import tempdirs

        tempdirs.sweep()  # what a killed run left in bake's temp root
        args.trust_remote_code = getattr(args, "trust_remote_code", False)
        # progress bars only on a terminal (a log or CI sees no redraws), unless asked for
        progress = not (args.quiet or args.json) and (args.progress or sys.stderr.isatty())
        cmd = COMMANDS[args.cmd]
        if getattr(args, "device", None) is not None or getattr(args, "memory_budget", None) is not None:
            from ..model.device import using

            with using(getattr(args, "device", None), getattr(args, "memory_budget", None)):  # every forward pass of the command (bake.model.device)
                result = cmd.run(args, progress)
        else:
            result = cmd.run(args, progress)
        if result is not None:  # (None: one of several `accelerate launch` processes, which prints nothing)
            print(json.dumps(result, indent=2, default=as_json) if args.json else cmd.render(result, args), file=out)
        return 0
    except BaseException as e:
        if interrupt.received is not None:  # whatever the signal turned into on its way out
            print(f"bake: stopped by {interrupt.name(interrupt.received)}; unfinished output was removed",
                  file=sys.stderr)
            raise SystemExit(128 + interrupt.received) from None
        if isinstance(e, SystemExit):  # argparse's usage errors (exit 2) and --help/--version (0)
            raise
        if isinstance(e, VerificationFailed):
            report = e.report or {}
            if args.json:
                print(json.dumps(report, indent=2, default=as_json), file=out)
            else:
                if "integrity" in report and report["integrity"]["status"] == "changed":
                    print(format_integrity(report["integrity"]), file=out)
                if "verification" in report:
                    print(report["verification"].terminal(), file=out)
                for entry in (report.get("exports") or {}).values():
                    print(entry.terminal(), file=out)
                if "export" in report:
                    print(report["export"].terminal(), file=out)
            print(f"bake: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, BakeError):
            print(f"bake: error: {e}", file=sys.stderr)
            return e.exit_code
        if isinstance(e, KeyboardInterrupt):
            print("bake: interrupted; unfinished output was removed", file=sys.stderr)
            return 130
        if os.environ.get("BAKE_DEBUG"):
            raise
        print(f"bake: internal error: {type(e).__name__}: {first_line(e, 500)} (a bug in bake, not in your input: "
              "please report it; BAKE_DEBUG=1 shows the traceback). Unfinished output was removed.", file=sys.stderr)
        return 3
    finally:
        if argv is not None:
            interrupt.uninstall(previous)
            redact.uninstall(streams)
        else:
            sys.stdout.flush()
            sys.stderr.flush()
