"""Reader for gzip-compressed IDX files (the MNIST / Fashion-MNIST format).

Layout: a 4-byte magic 0x00 0x00 <type> <ndim>, ndim big-endian uint32
dimensions, then the values in C order. Only type 0x08 (unsigned byte) is
used by these datasets and supported here.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

_UBYTE = 0x08


def read_idx(path: str | os.PathLike, *, ndim: int) -> np.ndarray:
  """The uint8 array stored in the .gz IDX file at `path`, of rank `ndim`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not gzip, truncated, wrong magic number, or a payload
      whose size disagrees with the header (the message names the file).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"IDX file not found: {path}")
  try:
    with gzip.open(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(
        f"{path}: not a readable gzip file (corrupt or truncated): {e}"
    ) from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(
        f"{path}: bad IDX magic number {raw[:4].hex() or '(empty)'}"
    )
  if raw[2] != _UBYTE or raw[3] != ndim:
    raise ValueError(
        f"{path}: IDX header says type 0x{raw[2]:02x} with {raw[3]} dimensions; "
        f"expected type 0x{_UBYTE:02x} (uint8) with {ndim}"
    )
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(f"{path}: truncated IDX header")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  expected = int(np.prod(shape))
  if len(raw) - header != expected:
    raise ValueError(
        f"{path}: IDX header promises shape {shape} ({expected} bytes) but the file "
        f"holds {len(raw) - header} bytes of data"
    )
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)
