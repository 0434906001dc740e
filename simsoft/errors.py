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

import errno
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


class Preempted(UserError):
  """SIGTERM (a preemption notice): the run saved a checkpoint and stopped.

  Its own exit status, EX_TEMPFAIL, tells a launcher to restart the same command.
  """

  exit_code = 75


class InterruptedRun(UserError):
  """The run was stopped by Ctrl-C (SIGINT)."""

  exit_code = 130


class OSFailure(UserError, OSError):
  """The operating system refused a read or write (read-only, disk full, ...)."""

  exit_code = 2


# errno -> what the user reads, and what to do.
_OS_CAUSES = {
    errno.EROFS: ("is on a read-only file system", "use a writable path"),
    errno.EACCES: (
        "is not writable (permission denied)",
        "use a writable path",
    ),
    errno.EPERM: (
        "is not writable (operation not permitted)",
        "use a writable path",
    ),
    errno.ENOSPC: (
        "cannot be written: no space left on the device",
        "free some space and rerun",
    ),
    errno.EDQUOT: (
        "cannot be written: disk quota exceeded",
        "free some space and rerun",
    ),
    errno.ENOTDIR: (
        "lies under a regular file (not a directory)",
        "give a path whose parents are directories",
    ),
    errno.EEXIST: ("exists already", "give a new path"),
    errno.EISDIR: ("is a directory, not a file", "give a file"),
    errno.ENOENT: ("does not exist", "check the path"),
}


def os_error_message(error: OSError, path: str | None = None) -> str:
  """One line naming the path and the cause of an OSError (errno), and what to do."""
  path = path or error.filename or "a file"
  cause, advice = _OS_CAUSES.get(
      error.errno, (f"failed: {error.strerror or error}", "check the path")
  )
  return f"{path} {cause}; {advice}"


def os_failure(error: OSError, path: str | None = None) -> OSFailure:
  """The OSError as a one-line user error (exit 2); errno kept."""
  failure = OSFailure(os_error_message(error, path))
  failure.errno = error.errno
  return failure


def caused_by_os_error(error: BaseException) -> OSError | None:
  """The first OSError with an errno in `error`'s chain (Orbax wraps them), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _OS_CAUSES:
      return error
    error = error.__cause__ or error.__context__
  return None


def guarded(fn, argv: Sequence[str] | None = None) -> int:
  """Runs fn() for a command-line tool: a user error or an OSError becomes one
  `simsoft: error:` line and its exit code (2 for OS errors), Ctrl-C 130."""
  try:
    fn()
  except UserError as e:
    report(str(e), exc=e, argv=argv)
    return e.exit_code
  except OSError as e:
    report(os_error_message(e), exc=e, argv=argv)
    return OSFailure.exit_code
  except KeyboardInterrupt as e:
    report("interrupted (Ctrl-C)", exc=e, argv=argv)
    return InterruptedRun.exit_code
  return 0


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
