"""One runner for every per-image stage: local process pool (default) or Ray.

A stage gives a picklable function ``func(item) -> result`` and the list of items;
:func:`run_per_image` runs it with a progress bar, in item order, and returns a
:class:`RunSummary` (results, counts of done / skipped / failed, failure messages).
Items for which ``is_done(item)`` is true are skipped (resume after a kill).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence

from tqdm import tqdm

from pseudo_labels.core.errors import PseudoLabelsError


def select_shard(items: Iterable[Any], shard: tuple[int, int] | None) -> list[Any]:
    """Deterministic shard ``i`` of ``n`` (0-based): every n-th item starting at i."""
    items = list(items)
    if shard is None:
        return items
    i, n = shard
    return items[i::n]


@dataclass(frozen=True)
class RunOptions:
    """How a per-image stage runs; filled from the shared CLI flags by :func:`pseudo_labels.core.arguments.runner_options`.

    ``shard = (i, n)`` keeps every n-th image starting at i (0-based), a deterministic split
    of the sorted image list; ``overwrite`` recomputes finished outputs.
    """

    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None
    shard: tuple[int, int] | None = None
    fail_fast: bool = False
    overwrite: bool = False

    def select(self, items: Sequence[Any]) -> list[Any]:
        """This shard's part of ``items`` (all of them without ``--shard``)."""
        return select_shard(items, self.shard)

    def describe(self) -> dict:
        """For manifests: what does not change outputs is left out except the shard."""
        return {"shard": list(self.shard) if self.shard else None}


@dataclass
class RunSummary:
    """Outcome of a per-image run. ``results[i]`` is None for skipped or failed items."""

    results: list[Any]
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (item name, message)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return f"done {self.done}, skipped {self.skipped} (already finished), failed {len(self.failed)}"

    def raise_if_failed(self, what: str = "images", hint: str = "") -> None:
        if self.failed:
            raise failures_error(self.failed, what, hint)


def failures_error(failures: Sequence[tuple[str, str]], what: str = "images", hint: str = "") -> PseudoLabelsError:
    """The error naming the failed items (the first five) and ``hint`` (what to do)."""
    names = "; ".join(f"{n}: {m}" for n, m in failures[:5])
    more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
    return PseudoLabelsError(f"{len(failures)} {what} failed: {names}{more}" + (f"; {hint}" if hint else ""))


def error_message(exc: BaseException) -> str:
    """One line for the run summary: our errors as they are, others with their type."""
    return str(exc) if isinstance(exc, PseudoLabelsError) else f"{type(exc).__name__}: {exc}"


def batch_name(entries: Sequence[Any]) -> str:
    """Name of a batch of images (objects with ``.stem``) in the run summary."""
    if len(entries) == 1:
        return entries[0].stem
    return f"{entries[0].stem} .. {entries[-1].stem} ({len(entries)} images)"


def _call(func: Callable, item: Any) -> tuple[bool, Any]:
    try:
        return True, func(item)
    except PseudoLabelsError as exc:
        return False, error_message(exc)
    except Exception as exc:  # reported per item, the run goes on
        if os.environ.get("PSEUDO_LABELS_TRACEBACK") == "1":
            traceback.print_exc()
        return False, error_message(exc)


def _share_cores(workers: int) -> None:
    """Pool-process initialiser: share this machine's cores among the pool's ``workers``
    processes (OpenMP / BLAS / torch / OpenCV thread pools get cores // workers threads).

    Every library otherwise starts one thread per core in every worker, and OpenMP threads
    spin-wait: 2 workers x 2 threads on 2 busy cores ran the semantic stage ~5x slower than
    the same work under Ray (which gives its workers one thread). Results do not change.
    The environment variables reach libraries imported later in the worker (torch reads
    OMP_NUM_THREADS when it starts); those already loaded are limited directly.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    n = max(1, cores // max(1, workers))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(n)
    threadpool_limits(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def run_per_image(
    func: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    desc: str = "images",
    unit: str = "img",
    name_of: Callable[[Any], str] = str,
    is_done: Callable[[Any], bool] | None = None,
    fail_fast: bool = False,
    progress: bool = True,
    options: RunOptions | None = None,
) -> RunSummary:
    """Run ``func`` over ``items``; see the module docstring.

    ``workers`` <= 1 runs in this process (no pickling). ``executor="ray"`` uses Ray
    (``ray_address`` of an existing cluster, or a local instance when None).
    With ``fail_fast`` the first failure raises :class:`PseudoLabelsError`.
    ``options`` (from the CLI) overrides ``workers``, ``executor``, ``ray_address`` and
    ``fail_fast``; sharding is the caller's job (:meth:`RunOptions.select`). ``unit`` labels
    what the progress bar counts (``"img"``, or ``"batch"`` when an item holds several images).
    """
    if options is not None:
        workers, executor = options.workers, options.executor
        ray_address, fail_fast = options.ray_address, options.fail_fast or fail_fast
    items = list(items)
    summary = RunSummary(results=[None] * len(items))
    todo = []
    for i, item in enumerate(items):
        if is_done is not None and is_done(item):
            summary.skipped += 1
        else:
            todo.append(i)
    bar = tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress or not todo, file=sys.stderr,
               dynamic_ncols=True, leave=False)

    def record(i: int, ok: bool, value: Any) -> None:
        bar.update(1)
        if ok:
            summary.results[i] = value
            summary.done += 1
        else:
            summary.failed.append((name_of(items[i]), value))
            if fail_fast:
                bar.close()
                raise PseudoLabelsError(f"{name_of(items[i])}: {value}")

    try:
        if executor == "ray":
            _run_ray(func, items, todo, record, ray_address, workers)
        elif executor != "local":
            raise PseudoLabelsError(f"unknown executor {executor!r} (choose local or ray)")
        elif workers <= 1 or len(todo) <= 1:
            for i in todo:
                record(i, *_call(func, items[i]))
        else:
            # forkserver, not fork: forking a parent whose OpenMP / torch / faiss thread pools
            # are already running deadlocks the children.
            ctx = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_share_cores,
                                     initargs=(workers,)) as pool:
                futures = {pool.submit(_call, func, items[i]): i for i in todo}
                for fut in as_completed(futures):
                    record(futures[fut], *fut.result())
    finally:
        bar.close()
    return summary


def _check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear message when ``host:port`` does not answer (ray.init retries for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise PseudoLabelsError(f"--ray-address {address!r}: expected HOST:PORT (e.g. head-node:6379) or ray://HOST:PORT")
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise PseudoLabelsError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc.strerror or exc}); "
                                "start one with 'ray start --head' or leave out --ray-address") from None


RAY_AUTH_HELP = ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, in a file named by "
                 "RAY_AUTH_TOKEN_PATH, or in ~/.ray/auth_token ('ray get-auth-token' on the head node prints it); "
                 "use the same RAY_AUTH_MODE and token on every node and on this machine")


def ray_token_source(env: Mapping[str, str] | None = None) -> str | None:
    """Where Ray would take its auth token from, in Ray's order, or None when there is none."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']}"
    home = env.get("HOME") or os.path.expanduser("~")
    default = os.path.join(home, ".ray", "auth_token")
    return default if os.path.isfile(default) else None


def use_ray_token_auth(env: MutableMapping[str, str] | None = None) -> str | None:
    """Before connecting to a cluster by address: turn on Ray's token authentication when the
    environment holds a token (Ray does this by itself only for a local cluster it finds, not for an
    explicit address, so a token-protected head refuses the connection). A RAY_AUTH_MODE the user set
    is kept as it is; authentication is never turned off here. Returns the mode in effect (None: unset).
    Must run before ``import ray`` (Ray reads the mode once, when it loads).
    """
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_MODE"):
        return env["RAY_AUTH_MODE"]
    if ray_token_source(env) is not None:
        env["RAY_AUTH_MODE"] = "token"
        return "token"
    return None


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """Redirect file descriptor 2 (where Ray's C++ client logs) into a temporary file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: (tmp.seek(0), tmp.read().decode("utf-8", "replace"))[1]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def ray_connect_error(address: str | None, exc: BaseException, ray_log: str, mode: str | None) -> PseudoLabelsError:
    """The user-facing message for a failed ``ray.init``: an authentication failure says so."""
    if "Unauthenticated" in ray_log or "InvalidAuthToken" in ray_log:
        if mode == "token":
            src = ray_token_source() or "no token found"
            why = f"the cluster rejected this machine's token (token from {src})"
        else:
            why = "the cluster requires token authentication and this machine sent no token"
        return PseudoLabelsError(f"--ray-address {address}: Ray authentication failed: {why}; {RAY_AUTH_HELP}")
    return PseudoLabelsError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc}); "
                             "start one with 'ray start --head' or leave out --ray-address")


def _run_ray(func, items, todo, record, ray_address, workers) -> None:
    mode = use_ray_token_auth() if ray_address and "ray" not in sys.modules else os.environ.get("RAY_AUTH_MODE")
    try:
        import ray
    except ImportError:  # without ray: --executor ray is refused with this message (the local pool still works)
        raise PseudoLabelsError("--executor ray needs the 'ray' package (pip install ray)") from None
    if not ray.is_initialized():
        _check_reachable(ray_address)
        kwargs = {}
        if ray_address is None and workers > 1:
            kwargs["num_cpus"] = workers  # local instance sized like the local pool
        with _stderr_captured() as ray_log:
            try:
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                         ignore_reinit_error=True, **kwargs)
                failure = None
            except ConnectionError as exc:
                failure = exc
            log = ray_log()
        if failure is not None:
            raise ray_connect_error(ray_address, failure, log, mode) from None
    remote = ray.remote(_call)
    pending = {remote.remote(func, items[i]): i for i in todo}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            i = pending.pop(ref)
            record(i, *ray.get(ref))
