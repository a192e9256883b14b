"""Errors a user can fix. The CLI prints them without a traceback and exits with code 2.

Anything else that escapes is a bug in tunelab: it exits with code 1 and a traceback.
"""

from __future__ import annotations


class TunelabError(Exception):
    """A problem with the user's input (config, data, model, run folder), never a bug.

    ``problems`` holds one line per problem, each saying where it is and what would be right.
    """

    title = "error"

    def __init__(self, problems: str | list[str], title: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if title is not None:
            self.title = title
        super().__init__("\n".join(self.problems))


class ConfigError(TunelabError):
    """The config (YAML file plus overrides) is invalid; one line per problem."""

    title = "invalid config"


class DataError(TunelabError):
    """The data files hold rows that cannot be used; one line per bad row."""

    title = "invalid data"


class ModelLoadError(TunelabError):
    """A model or tokenizer could not be found or loaded."""

    title = "cannot load model"


class ExportError(TunelabError):
    """The run's model, tokenizer or target cannot be exported (an unsupported architecture, tokenizer
    or option), or a written file failed its read-back check."""

    title = "cannot export"


class RunFolderError(TunelabError):
    """A run folder is missing, incomplete or would be overwritten."""

    title = "run folder"


class TrainingInterrupted(TunelabError):
    """Training stopped on a signal after saving a checkpoint; ``--resume`` continues it."""

    title = "training interrupted"

    def __init__(self, problems: str | list[str], exit_code: int):
        super().__init__(problems)
        self.exit_code = exit_code
