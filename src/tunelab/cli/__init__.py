"""The ``tunelab`` command line: ``main`` parses the command and turns errors into one line on stderr."""

from tunelab.cli.commands import main, report_problems

__all__ = ["main", "report_problems"]
