"""Errors with the exit codes the CLI maps them to."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (for one-line errors), at most `limit` characters."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else ""


class BakeError(Exception):
    """Bad input: a recipe, an artifact or a model that cannot be used. Exit code 2."""

    exit_code = 2


class RecipeError(BakeError):
    """The recipe is malformed; the message names the YAML path."""


class NotBakeable(BakeError):
    """The intervention is valid, but no stock checkpoint can represent it exactly."""


class VerificationFailed(Exception):
    """Baked and hooked outputs differ beyond the stated tolerance. Exit code 1."""

    exit_code = 1

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' for the closest of `choices`, or ''."""
    import difflib

    close = difflib.get_close_matches(str(word), sorted(map(str, choices)), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def close_file(path) -> str:
    """' (did you mean X?)' for a missing file, from the names in its folder, or ''."""
    from pathlib import Path

    folder = Path(path).parent
    try:
        names = [p.name for p in folder.iterdir()][:10000] if folder.is_dir() else []
    except OSError:
        return ""
    hint = did_you_mean(Path(path).name, names)
    return hint.replace("(did you mean '", f"(did you mean '{folder}/") if hint else ""
