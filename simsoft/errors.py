"""User errors: what a user did wrong or must do, one line each, and how the CLI shows them.

A user error (a bad config value, another run's workdir, a damaged file, a
NaN loss, Ctrl-C) is a ``UserError``: its message names the field, file or
value and says what to do. ``python -m simsoft.main`` prints it as one line,

  simsoft: error: <message>

on stderr and exits with ``exit_code`` (2 for usage errors), without a
traceback unless ``--traceback`` or ``SIMSOFT_TRACEBACK=1`` asks for one.
Each subclass also derives from the builtin exception it replaces, so code
that catches ``ValueError`` or ``FileNotFoundError`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
import sys
import traceback

PREFIX = "simsoft: error: "
TRACEBACK_ENV = "SIMSOFT_TRACEBACK"


class UserError(Exception):
  """A problem the user can fix; the message is shown as one line."""

  exit_code = 1


class ConfigError(UserError, ValueError):
  """A config field, argument or flag has a bad value (usage error)."""

  exit_code = 2


class MissingInputError(UserError, FileNotFoundError):
  """A file or workdir the config names does not exist or is not finished."""

  exit_code = 2


class WorkdirError(UserError, ValueError):
  """The workdir holds another run (config.json or a phase's provenance differs)."""

  exit_code = 2


class WorkdirBusyError(UserError):
  """Another live process holds the workdir's lock."""

  exit_code = 3


class DamagedFileError(UserError):
  """A file of the workdir (checkpoint, JSON record) cannot be read."""

  exit_code = 4


class NonFiniteLossError(UserError, FloatingPointError):
  """Training produced a NaN or inf loss."""

  exit_code = 5


class InterruptedRun(UserError):
  """The run was stopped by Ctrl-C (SIGINT)."""

  exit_code = 130


def one_line(message: str) -> str:
  """The message with its lines joined by '; ' and runs of spaces collapsed."""
  parts = [" ".join(line.split()) for line in str(message).splitlines()]
  return "; ".join(p for p in parts if p)


def traceback_wanted(argv: Sequence[str] | None = None) -> bool:
  """True when --traceback is on the command line or SIMSOFT_TRACEBACK is set (not 0)."""
  argv = sys.argv if argv is None else argv
  flag = any(
      a in ("--traceback", "--traceback=true", "--traceback=1") for a in argv
  )
  return flag or os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def report(
    message: str,
    *,
    exc: BaseException | None = None,
    argv: Sequence[str] | None = None,
) -> None:
  """Prints `simsoft: error: <message>` on stderr (after the traceback, if asked for)."""
  if exc is not None and traceback_wanted(argv):
    traceback.print_exception(exc, file=sys.stderr)
  print(PREFIX + one_line(message), file=sys.stderr, flush=True)


def warn(message: str) -> None:
  """Prints `simsoft: warning: <message>` on stderr."""
  print("simsoft: warning: " + one_line(message), file=sys.stderr, flush=True)
