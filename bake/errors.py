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
