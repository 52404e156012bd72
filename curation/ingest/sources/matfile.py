"""Reading the MATLAB (.mat) annotation files of Stanford Cars, Stanford Dogs and Oxford Flowers.

scipy.io.loadmat returns nested numpy arrays whose shape depends on how MATLAB saved them
(1xN cells, Nx1 cells, struct arrays); these helpers flatten them to Python lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load(path: Path) -> dict[str, Any]:
    import scipy.io  # slow import: only for the layouts that ship .mat files

    try:
        return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=True)
    except (ValueError, OSError, TypeError, NotImplementedError) as err:
        raise ValueError(f"{path}: not a readable MATLAB file ({err})") from None


def variable(mat: dict[str, Any], name: str, path: Path) -> Any:
    if name not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: no variable {name!r} (found: {found})")
    return mat[name]


def flat(value: Any) -> list[Any]:
    """A MATLAB cell/vector as a flat list of Python scalars and strings."""
    out = []
    for v in np.atleast_1d(np.asarray(value, dtype=object)).ravel():
        while isinstance(v, np.ndarray) and v.size == 1:
            v = v.item()
        out.append(v.item() if isinstance(v, np.generic) else v)
    return out


def struct_column(records: Any, field: str, path: Path) -> list[Any]:
    """One field of a MATLAB struct array, as a flat list."""
    records = np.atleast_1d(records)
    if records.dtype.names is None or field not in records.dtype.names:
        raise ValueError(f"{path}: struct array has no field {field!r}")
    return flat(records[field])
