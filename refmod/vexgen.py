"""Host-side twin of ``vexctl gen``: the deterministic vector generator.

splitmix64 with ``state = seed``; each value consumes one output ``x`` and is
``((x >> 40) - 2**23) / 2**23`` (exact in float32, in [-1, 1)).  Vector ``i``
(id ``start_id + i``) takes ``dim`` consecutive values.  ``vexctl search
--seed S`` uses ``generate(1, dim, S)[0]`` as the query.
"""

from __future__ import annotations

from typing import Any

MASK64 = (1 << 64) - 1


def splitmix64(state: int) -> tuple[int, int]:
    """Advance ``state`` once; return ``(new_state, output)``."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def generate(count: int, dim: int, seed: int) -> Any:
    """Return a ``(count, dim)`` float32 numpy array equal to what ``vexctl gen`` adds."""
    import numpy as np

    n = count * dim
    # vectorised splitmix64: state_i = seed + (i + 1) * golden (mod 2**64)
    with np.errstate(over="ignore"):
        idx = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed & MASK64) + idx * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    vals = ((z >> np.uint64(40)).astype(np.int64) - (1 << 23)).astype(np.float32) / np.float32(1 << 23)
    return vals.reshape(count, dim)


def knn(data: Any, query: Any, k: int, metric: str, start_id: int = 0) -> list[tuple[int, float]]:
    """Exact k-NN as the module computes it (float64 sums; ties by insertion order)."""
    import numpy as np

    d = data.astype(np.float64)
    q = np.asarray(query, dtype=np.float64)
    if metric == "l2":
        score = ((d - q) ** 2).sum(axis=1)
        key = score
    elif metric == "dot":
        score = d @ q
        key = -score
    elif metric == "cosine":
        norms = np.sqrt((d * d).sum(axis=1) * (q @ q))
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(norms > 0, (d @ q) / np.where(norms > 0, norms, 1), 0.0)
        key = -score
    else:
        raise ValueError(f"unknown metric {metric!r}")
    order = np.argsort(key, kind="stable")[:k]
    return [(start_id + int(i), float(score[i])) for i in order]
