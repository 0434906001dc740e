"""Paths that may be local or in a bucket (gs://...), through etils.epath.

Local paths are made absolute (Orbax requires it); URLs are kept as given.
"""

from __future__ import annotations

import os

from etils import epath


def resolve(path: str | os.PathLike) -> epath.Path:
  text = os.fspath(path)
  if "://" in text:
    return epath.Path(text)
  return epath.Path(os.path.abspath(text))
