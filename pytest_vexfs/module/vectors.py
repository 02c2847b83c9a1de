"""Vector operations on a mounted filesystem of the module under test, and their exact answers.

`VexctlClient` drives the guest-side `vexctl` tool (built from the module's tools, see the profile) over
any runner's `run()` and parses the one JSON object it prints. `generate` reproduces `vexctl gen`'s
deterministic dataset on the host (numpy) and `knn` computes exact k-nearest neighbours the way the
module defines them, so a test can compare what the kernel answered with a brute force of its own.
Nothing here imports pytest; numpy is needed only by the host-side functions.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pytest_vexfs.errors import VexfsError
from pytest_vexfs.module.profile import ModuleProfile, Runner

if TYPE_CHECKING:
    import numpy as np

METRICS = ("l2", "cosine", "dot")
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
#: strerror text -> errno name, to name what vexctl's "vexctl: search: Invalid argument" means
_STRERROR = {os.strerror(code): name for code, name in sorted(errno.errorcode.items(), reverse=True)}


class VectorError(VexfsError):
    """A vector request failed; `errno_name` is the kernel's answer (EINVAL, E2BIG, ...) when known."""

    def __init__(self, message: str, *, command: str = "", exit_status: int = 0, stderr: str = "",
                 errno_name: str = "") -> None:
        text = message + (f"\n  command: {command}" if command else "")
        if stderr.strip():
            text += f"\n  stderr: {stderr.strip()}"
        super().__init__(text)
        self.command, self.exit_status, self.stderr, self.errno_name = command, exit_status, stderr, errno_name


class VectorUnsupported(VectorError):
    """The vector client offers no such operation (the module's ABI has no ioctl for it)."""


class VectorABIError(VectorError):
    """The module does not answer the client's ABI: one error for the whole domain, naming the client and
    the ioctl that failed ("the module at /mnt/vexfs does not implement ioctl 0x8018e703 ... ENOTTY")."""


class ClientNotFound(VexfsError):
    """The profile's vector_client names no importable client class."""


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0xE7 << 8) | nr


#: the reference module's vector ioctls (refmod/vexfs_ref_ioctl.h), as vexctl issues them
VEXCTL_IOCTLS = {
    "add": ("VEXFS_REF_IOC_ADD", _ioc(1, 1, 24)), "search": ("VEXFS_REF_IOC_SEARCH", _ioc(3, 2, 32)),
    "stats": ("VEXFS_REF_IOC_STATS", _ioc(2, 3, 24)), "clear": ("VEXFS_REF_IOC_CLEAR", _ioc(0, 4, 0)),
    "delete": ("VEXFS_REF_IOC_DELETE", _ioc(3, 5, 16)),
}


@runtime_checkable
class VectorClient(Protocol):
    """What the vector_ops domain needs from a module's vector API. The profile's `vector_client` names the
    implementation: `vexctl` (the reference module's ABI, the default), `package.module:Class`, or the name
    of an entry point in the group `pytest_vexfs.vector_clients`; it is constructed as `Class(guest)`.

    `probe(mountpoint)` is called once before the domain's tests and raises VectorABIError when the module
    does not answer; the operations raise VectorError (with `errno_name`) for refused requests and
    VectorUnsupported for operations the ABI lacks.
    """

    name: str

    def probe(self, mountpoint: str) -> None: ...

    def store(self, path: str, vectors: Any, *, start_id: int | None = None) -> dict[str, Any]: ...

    def get(self, path: str, vector_id: int) -> list[float]: ...

    def delete(self, path: str, vector_id: int) -> int: ...

    def search(self, path: str, k: int, metric: str = "l2", *, seed: int | None = None,
               query: Sequence[float] | None = None, dim: int | None = None) -> SearchResult: ...

    def stats(self, path: str) -> VectorStats: ...


def load_client(spec: str, guest: Runner) -> VectorClient:
    """The vector client the profile names (see VectorClient), constructed for `guest`."""
    client = client_class(spec)(guest)
    missing = [m for m in ("probe", "store", "get", "delete", "search", "stats") if not hasattr(client, m)]
    if missing:
        raise ClientNotFound(f"vector_client {spec!r} lacks {', '.join(missing)}",
                             hint="implement pytest_vexfs.module.vectors.VectorClient")
    return client  # type: ignore[no-any-return]


def client_class(spec: str) -> Any:
    """The class the profile's vector_client names (imported, not constructed): ClientNotFound if none."""
    if spec in ("", "vexctl"):
        return VexctlClient
    import importlib
    from importlib.metadata import entry_points

    target: Any = None
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ClientNotFound(f"vector_client {spec!r} cannot be imported: {exc}",
                                 hint="name a class as package.module:Class importable from the test run "
                                      "(on PYTHONPATH or installed), or an entry point of the group "
                                      "pytest_vexfs.vector_clients") from None
    else:
        found = [ep for ep in entry_points(group="pytest_vexfs.vector_clients") if ep.name == spec]
        if not found:
            raise ClientNotFound(f"vector_client {spec!r} is neither 'vexctl', a package.module:Class nor an "
                                 "entry point of the group pytest_vexfs.vector_clients",
                                 hint="set vector_client in the profile to one of those")
        target = found[0].load()
    return target


#: what the vector_ops suite uses beyond VectorClient, as `VexctlClient` offers it: (why a test needs it)
EXTRA_OPERATIONS = {
    "gen": "generates vectors in the guest and sends them in requests of exactly the batch size it is given",
    "clear": "empties a file's vector set in one call",
    "abuse": "sends the reference ABI's malformed requests (null and bad pointers, zero counts) itself",
    "search_latencies": "times searches inside the guest, without the client's transport",
}


def missing_operation(client: VectorClient, operation: str) -> str:
    """Why a test needing `operation` (one of EXTRA_OPERATIONS) cannot run with `client`, or "" if it can."""
    if callable(getattr(client, operation, None)):
        return ""
    return (f"the vector client {getattr(client, 'name', type(client).__name__)!r} has no {operation}() "
            f"(which {EXTRA_OPERATIONS[operation]}); only the VectorClient operations store, get, delete, "
            "search and stats are required of a client")


#: vectors per store request when the profile declares no smaller max_batch (vexctl's own largest batch)
DEFAULT_BATCH = 16384


def batch_for(profile: ModuleProfile) -> int:
    """Vectors per store request for this module: DEFAULT_BATCH, or its profile's max_batch when smaller."""
    return min(DEFAULT_BATCH, profile.limit("max_batch", DEFAULT_BATCH))


def store_generated(client: VectorClient, path: str, count: int, dim: int, seed: int, *,
                    batch: int | None = None) -> dict[str, Any]:
    """Store `generate(count, dim, seed)` in the empty file `path` (ids 0..count-1) through `client`, at most
    `batch` vectors per request (the profile's max_batch); returns {"count", "dim", "seconds"}.

    A client with `gen` (vexctl) makes the data in the guest; any other gets it made here and `store`d.
    """
    gen = getattr(client, "gen", None)
    if callable(gen):
        made: dict[str, Any] = gen(path, count, dim, seed, batch=batch)
        return made
    import time

    data = generate(count, dim, seed)
    step = max(1, batch or count)
    started = time.perf_counter()
    for first in range(0, count, step):
        client.store(path, data[first:first + step], start_id=first)
    stats = client.stats(path)
    return {"added": count, "count": stats.count, "dim": stats.dim, "seconds": time.perf_counter() - started}


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Best-first results of one k-NN search: ids and scores (l2: squared distance; cosine/dot: similarity)."""

    metric: str
    k: int
    ids: list[int]
    scores: list[float]

    @property
    def found(self) -> int:
        return len(self.ids)

    def pairs(self) -> list[tuple[int, float]]:
        return list(zip(self.ids, self.scores, strict=True))


@dataclasses.dataclass(frozen=True)
class VectorStats:
    """What a file holds: vector count, dimension (0 while empty), bytes of ids + data."""

    count: int
    dim: int
    bytes: int


class VexctlClient:
    """Runs `vexctl` in a guest: add/gen/search/stats/clear/delete/abuse, each returning parsed JSON.
    The reference module's client (VectorClient `vexctl`)."""

    name = "vexctl"

    def __init__(self, guest: Runner, tool: str = "vexctl", timeout: float = 300.0) -> None:
        self.guest = guest
        self.tool = tool
        self.timeout = timeout

    def probe(self, mountpoint: str) -> None:
        """Raise VectorABIError unless the tool is there and the module answers its stats ioctl."""
        if not self.guest.run(f"command -v {shlex.quote(self.tool)}").ok:
            raise VectorABIError(f"the vector client {self.name!r} ({self.tool}) is not on the guest's PATH")
        probe = f"{mountpoint.rstrip('/')}/.vexfs-vector-probe"
        self.guest.run(f": > {shlex.quote(probe)}", check=True)
        try:
            self.stats(probe)
        except VectorError as exc:
            ioctl_name, number = VEXCTL_IOCTLS["stats"]
            said = exc.errno_name or f"exit {exc.exit_status}: {exc.stderr.strip()}"
            raise VectorABIError(f"the module at {mountpoint} does not implement ioctl {number:#x} ({ioctl_name}) "
                                 f"of client {self.name}: {said}",
                                 command=exc.command, errno_name=exc.errno_name) from None
        finally:
            self.guest.run(f"rm -f {shlex.quote(probe)}")

    def store(self, path: str, vectors: Any, *, start_id: int | None = None) -> dict[str, Any]:
        """Append rows of floats; returns {"added", "count", "dim"} (the VectorClient name of add)."""
        return self.add(path, vectors, start_id=start_id)

    def get(self, path: str, vector_id: int) -> list[float]:
        raise VectorUnsupported("vexctl cannot read a vector back: the reference ABI has no get ioctl "
                                "(add, search, stats, clear, delete)")

    def command(self, sub: str, path: str, *args: str) -> str:
        """The guest command line of one vexctl call (what an error-path sweep runs armed)."""
        return shlex.join([self.tool, sub, path, *args])

    def _call(self, sub: str, path: str, *args: str, input: bytes | str | None = None,
              timeout: float | None = None) -> dict[str, Any]:
        command = self.command(sub, path, *args)
        result = self.guest.run(command, timeout=timeout or self.timeout, input=input)
        if not result.ok:
            stderr = result.stderr.strip()
            reason = stderr.rsplit(": ", 1)[-1] if stderr else ""
            name = _STRERROR.get(reason, "")
            raise VectorError(f"vexctl {sub} on {path} failed" + (f" with {name}" if name else
                                                                   f" (exit {result.exit_status})"),
                              command=command, exit_status=result.exit_status, stderr=result.stderr,
                              errno_name=name)
        try:
            data = json.loads(result.stdout)
        except ValueError as exc:
            raise VectorError(f"vexctl {sub} printed no JSON object: {exc}", command=command,
                              stderr=result.stdout + result.stderr) from None
        if not isinstance(data, dict):
            raise VectorError(f"vexctl {sub} printed {type(data).__name__}, not an object", command=command)
        return data

    def add(self, path: str, vectors: Any, *, start_id: int | None = None, dim: int | None = None) -> dict[str, Any]:
        """Append `vectors` (rows of floats: numpy array or lists) sent as raw float32; returns
        {"added", "count", "dim"}. Ids are start_id, start_id+1, ... (default: the current count)."""
        import numpy as np

        data = np.ascontiguousarray(vectors, dtype="<f4")
        if data.ndim != 2:
            raise ValueError(f"vectors must be 2-D (rows x dim), got shape {data.shape}")
        args = ["--format", "f32", "--dim", str(dim or data.shape[1])]
        if start_id is not None:
            args += ["--start-id", str(start_id)]
        return self._call("add", path, *args, input=data.tobytes())

    def gen(self, path: str, count: int, dim: int, seed: int, *, start_id: int | None = None,
            batch: int | None = None) -> dict[str, Any]:
        """Add `count` generated vectors (the same as `generate(count, dim, seed)`); returns
        {"added", "count", "dim", "seconds"} (seconds spent in the guest generating and adding)."""
        args = ["--count", str(count), "--dim", str(dim), "--seed", str(seed)]
        if start_id is not None:
            args += ["--start-id", str(start_id)]
        if batch is not None:
            args += ["--batch", str(batch)]
        return self._call("gen", path, *args)

    def search(self, path: str, k: int, metric: str = "l2", *, seed: int | None = None,
               query: Sequence[float] | None = None, dim: int | None = None) -> SearchResult:
        """k-NN search with the generated query of `seed`, or an explicit `query`."""
        if (seed is None) == (query is None):
            raise ValueError("give exactly one of seed= or query=")
        args = ["--k", str(k), "--metric", metric]
        if dim is not None:
            args += ["--dim", str(dim)]
        if seed is not None:
            args += ["--seed", str(seed)]
        else:
            args += ["--query", ",".join(repr(float(x)) for x in query)]  # type: ignore[union-attr]
        data = self._call("search", path, *args)
        results = data.get("results", [])
        return SearchResult(str(data.get("metric", metric)), int(data.get("k", k)),
                            [int(r["id"]) for r in results], [float(r["score"]) for r in results])

    def stats(self, path: str) -> VectorStats:
        data = self._call("stats", path)
        return VectorStats(int(data["count"]), int(data["dim"]), int(data["bytes"]))

    def clear(self, path: str) -> None:
        self._call("clear", path)

    def delete(self, path: str, vector_id: int) -> int:
        """Remove every vector with this id; returns how many went (VectorError ENOENT if none)."""
        return int(self._call("delete", path, "--id", str(vector_id))["deleted"])

    def abuse(self, path: str) -> dict[str, str]:
        """Send vexctl's malformed requests; returns {case: errno name the kernel answered}."""
        return {str(k): str(v) for k, v in self._call("abuse", path).items()}

    def search_latencies(self, path: str, *, k: int, metric: str, seeds: Sequence[int], dim: int,
                         warmup: int = 1) -> list[float]:
        """Seconds taken by each search ioctl, timed inside the guest (no SSH or exec cost)."""
        return self.timed_searches([path], k=k, metric=metric, seeds=seeds, dim=dim, warmup=warmup).seconds[path]

    def timed_searches(self, paths: Sequence[str], *, k: int, metric: str, seeds: Sequence[int], dim: int,
                       warmup: int = 1, reference_file: str = "") -> TimedSearches:
        """Time search ioctls inside the guest, interleaved: for each seed, one search in every file of
        `paths` (same dim) and, if given, the best of three full reads of `reference_file`, so that
        figures compared with each other saw the same machine load.

        Issues the vexfsref search ioctl (vexfs_ref_ioctl.h) from guest python3 with the generated query
        of each seed, after `warmup` untimed rounds.
        """
        args = [str(k), str(METRICS.index(metric)), str(dim), str(warmup), reference_file or "-",
                ",".join(str(s) for s in seeds), *paths]
        command = "python3 - " + shlex.join(args)
        result = self.guest.run(command, timeout=self.timeout, input=_LATENCY_SCRIPT)
        if not result.ok:
            stderr = result.stderr.strip()
            raise VectorError("timed search failed", command=command, exit_status=result.exit_status,
                              stderr=stderr, errno_name=_STRERROR.get(stderr.rsplit(": ", 1)[-1], ""))
        data = json.loads(result.stdout)
        return TimedSearches({p: [float(x) for x in data["seconds"][p]] for p in paths},
                             [float(x) for x in data["reference"]])


@dataclasses.dataclass(frozen=True)
class TimedSearches:
    """Per-file search times (seconds, one per seed) and the times to read the reference file."""

    seconds: dict[str, list[float]]
    reference: list[float]


# Runs in the guest (python3, standard library only). struct vexfs_ref_search is
# {u32 dim, k, metric, found; u64 query, results}; _IOWR(0xE7, 2, 32 bytes).
_LATENCY_SCRIPT = r'''
import ctypes, fcntl, json, os, struct, sys, time
k, metric, dim, warmup = map(int, sys.argv[1:5])
reference, seeds, paths = sys.argv[5], [int(s) for s in sys.argv[6].split(",")], sys.argv[7:]
M = (1 << 64) - 1
def query(seed):
    s, out = seed, []
    for _ in range(dim):
        s = (s + 0x9E3779B97F4A7C15) & M
        z = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        z ^= z >> 31
        out.append(((z >> 40) - (1 << 23)) / (1 << 23))
    return (ctypes.c_float * dim)(*out)
IOC = (3 << 30) | (32 << 16) | (0xE7 << 8) | 2
fds = {p: os.open(p, os.O_RDONLY) for p in paths}
res = (ctypes.c_char * (16 * k))()
def search(fd, q):
    req = bytearray(struct.pack("<IIIIQQ", dim, k, metric, 0, ctypes.addressof(q), ctypes.addressof(res)))
    t0 = time.perf_counter()
    fcntl.ioctl(fd, IOC, req, True)
    return time.perf_counter() - t0
def read_reference():
    best = None
    for _ in range(3):  # the best of three reads: a few ms each, so one interrupt would be felt
        t0 = time.perf_counter()
        with open(reference, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
    return best
qs = [query(s) for s in seeds]
times, ref = {p: [] for p in paths}, []
for i, q in enumerate(qs[:warmup] + qs):
    if reference != "-":
        t = read_reference()
        if i >= warmup:
            ref.append(t)
    for p in paths:
        t = search(fds[p], q)
        if i >= warmup:
            times[p].append(t)
print(json.dumps({"seconds": times, "reference": ref}))
'''


# -- the generator and exact answers, on the host ----------------------------------------------------

def splitmix64(state: int) -> tuple[int, int]:
    """Advance `state` once; return (new_state, output). The scalar reference of `generate`."""
    state = (state + GOLDEN) & MASK64
    z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def generate(count: int, dim: int, seed: int) -> np.ndarray:
    """The (count, dim) float32 array `vexctl gen --count C --dim D --seed S` adds (ids 0..count-1 when
    the file was empty). Each value is ((x >> 40) - 2^23) / 2^23 for splitmix64 outputs x: exact in float32."""
    import numpy as np

    n = count * dim
    with np.errstate(over="ignore"):
        z = np.uint64(seed & MASK64) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    values = ((z >> np.uint64(40)).astype(np.int64) - (1 << 23)).astype(np.float32) / np.float32(1 << 23)
    matrix: np.ndarray = values.reshape(count, dim)
    return matrix


def query_for_seed(dim: int, seed: int) -> np.ndarray:
    """The query `vexctl search --seed S` uses: the first generated vector of that seed."""
    query: np.ndarray = generate(1, dim, seed)[0]
    return query


def scores(data: np.ndarray, query: Any, metric: str) -> np.ndarray:
    """Every row's score in float64: l2 = squared distance; cosine (0 when a norm is 0); dot."""
    import numpy as np

    d = np.asarray(data, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if metric == "l2":
        diff = d - q
        squared: np.ndarray = np.einsum("ij,ij->i", diff, diff)
        return squared
    dots = d @ q
    if metric == "dot":
        return dots
    if metric == "cosine":
        norms = np.sqrt(np.einsum("ij,ij->i", d, d) * float(q @ q))
        cosine: np.ndarray = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
        return cosine
    raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")


def knn(data: np.ndarray, query: Any, k: int, metric: str, start_id: int = 0) -> SearchResult:
    """Exact k-NN by brute force, ordered as the module orders them: l2 ascending, cosine/dot
    descending, ties to the earlier row."""
    import numpy as np

    s = scores(data, query, metric)
    order = np.argsort(s if metric == "l2" else -s, kind="stable")[:k]
    return SearchResult(metric, k, [start_id + int(i) for i in order], [float(s[i]) for i in order])


def recall(found: Sequence[int], truth: Sequence[int]) -> float:
    """|found ∩ truth| / |truth|: 1.0 for an exact search."""
    if not truth:
        return 1.0
    return len(set(found) & set(truth)) / len(set(truth))


def assert_same_neighbours(got: SearchResult, want: SearchResult, *, rel: float = 1e-9) -> None:
    """Same ids in the same order and scores within `rel`, or an AssertionError listing the first difference.

    Where exact ties make the order ambiguous (equal scores), ids may be swapped among the tied rows.
    """
    __tracebackhide__ = True
    if got.found != want.found:
        raise AssertionError(f"{got.metric}: {got.found} results, expected {want.found}")
    for rank, ((gid, gs), (wid, ws)) in enumerate(zip(got.pairs(), want.pairs(), strict=True)):
        if abs(gs - ws) > rel * max(1.0, abs(ws)):
            raise AssertionError(f"{got.metric} rank {rank}: score {gs!r} (id {gid}), expected {ws!r} (id {wid})"
                                 f"\n  got      {got.pairs()[:rank + 3]}\n  expected {want.pairs()[:rank + 3]}")
        if gid != wid and not any(abs(s - gs) <= rel * max(1.0, abs(gs)) and i == gid
                                  for i, s in want.pairs()):
            raise AssertionError(f"{got.metric} rank {rank}: id {gid}, expected {wid} (score {ws!r})"
                                 f"\n  got      {got.ids}\n  expected {want.ids}")

