"""simsoft's progress lines (absl logging at INFO), captured in-process."""

import contextlib
import logging

from absl import logging as absl_logging


@contextlib.contextmanager
def captured_log():
  """Yields a list that collects every absl log message (INFO and up) logged inside."""
  messages = []

  class Collect(logging.Handler):

    def emit(self, record):
      messages.append(record.getMessage())

  handler, logger = Collect(), logging.getLogger("absl")
  saved = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  logger.addHandler(handler)
  try:
    yield messages
  finally:
    logger.removeHandler(handler)
    absl_logging.set_verbosity(saved)
