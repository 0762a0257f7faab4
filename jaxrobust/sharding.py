"""Spreading a batched computation over every local device, and joining processes.

The engines put the image axis on a one-dimensional `jax.sharding.Mesh` named
`"batch"` and run the per-shard program with `jax.shard_map`: each device works on
its slice of the batch, with no communication. Results do not depend on the device
count: the kernels are per-image and random keys are per image.

On a CPU, JAX shows one device however many cores there are, and XLA runs most of a
program (elementwise loops, `while` loops, sorts) on the one thread that called it.
So on one CPU device a `shard_batch` program calls itself on one part of the batch
per core, from a thread pool (`cpu_threads`), which keeps every core busy without
changing the devices JAX shows. `jaxrobust.cpu.use_cpu_cores()` (called by the
command line before JAX starts its backend) instead splits the host into one device
per core; the sweep runs at the same speed either way (docs/architecture.md).

`initialize_processes` joins JAX's multi-controller runtime (`jax.distributed`), after
which the sweep splits its images over the processes (see `sweep.engine`).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxrobust._validation import is_traced

AXIS = "batch"


def available_bytes(*, host_fallback: bool = True) -> float | None:
    """Free memory of the default device, as its backend reports it (GPU, TPU).

    Where the device reports none (XLA's CPU devices): the host's available memory
    with `host_fallback`, else None.
    """
    try:
        stats = jax.devices()[0].memory_stats() or {}
        free = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
        if free > 0:
            return float(free)
    except Exception:  # noqa: BLE001 - not every backend reports memory
        pass
    if not host_fallback:
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def local_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis (`"batch"`) mesh over the local devices, or the first `devices` of them."""
    local = jax.local_devices()
    if devices is None:
        chosen = local
    elif isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise ValueError(
                f"asked for {devices} devices but {len(local)} are available; "
                f"pass a number from 1 to {len(local)}."
            )
        chosen = local[:devices]
    else:
        chosen = list(devices)
    return Mesh(np.asarray(chosen), (AXIS,))


def place_batch(tree, mesh: Mesh | None = None):
    """Puts arrays (a pytree) on `mesh` split along their leading axis, once.

    A `shard_batch` function copies host (NumPy) arguments onto the devices on every
    call; arrays placed here beforehand are used where they are. Place a batch once
    when many calls will read it (a sweep over levels, a benchmark). Arrays whose
    leading axis does not divide by the device count are returned unchanged
    (`shard_batch` pads those itself).

    Args:
        tree: arrays, each `(N, ...)`.
        mesh: a one-axis mesh (default: every local device).

    Returns:
        The same pytree with every divisible array a `jax.Array` sharded as
        `PartitionSpec("batch")` over `mesh`.
    """
    mesh = mesh or local_mesh()
    sharding = NamedSharding(mesh, PartitionSpec(AXIS))
    ndev = mesh.devices.size
    return jax.tree.map(
        lambda a: jax.device_put(a, sharding) if jnp.shape(a)[0] % ndev == 0 else a, tree)


def pad_leading(a, multiple: int):
    """`a` with its leading axis padded to a multiple of `multiple` by copies of its
    first element (what the batched engines compute and then drop)."""
    pad = (-jnp.shape(a)[0]) % multiple
    return jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)]) if pad else a


def shard_batch(fn: Callable, *, in_axes: Sequence[int | None], mesh: Mesh | None = None,
                chunk: int | None = None):
    """Runs `fn` with the leading axis of its batched arguments split over `mesh`.

    Args:
        fn: a function of batched arrays (leading axis = batch) and unbatched ones; it
            must treat batch elements independently and return arrays (or a pytree of
            arrays) with the batch as leading axis.
        in_axes: per positional argument, 0 when it is batched, None when it is
            replicated on every device.
        mesh: a one-axis mesh (default: every local device).
        chunk: if given, each device walks its share `chunk` elements at a time
            (`lax.map` over chunks, `fn` on each) instead of all at once: bounds the
            memory of a step and keeps its working set in cache.

    Returns:
        A jit-compiled function with `fn`'s signature. The batch is padded to a
        multiple of the device count (times `chunk`) with copies of its first
        element, and the padding removed from the outputs. On one CPU device with
        several cores, a call (outside `jit`) runs `cpu_threads(mesh)` equal parts of
        the batch at once, each as one of that many devices would (see `_Concurrent`);
        the results are those of the split over devices.
    """
    mesh = mesh or local_mesh()
    ndev = mesh.devices.size
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of elements, got {chunk}.")
    specs = tuple(PartitionSpec(AXIS) if a == 0 else PartitionSpec() for a in in_axes)

    def chunked(*args):
        def split(a):
            return a.reshape(-1, chunk, *a.shape[1:])

        def step(batched):
            it = iter(batched)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes,
                                                                   strict=True)))

        batched = [split(a) for a, ax in zip(args, in_axes, strict=True) if ax == 0]
        out = jax.lax.map(step, batched)
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)

    inner = jax.shard_map(fn if chunk is None else chunked, mesh=mesh, in_specs=specs,
                          out_specs=PartitionSpec(AXIS), check_vma=False)
    multiple = ndev * (chunk or 1)

    def batch_size(args) -> int:
        if len(args) != len(in_axes):
            raise ValueError(f"expected {len(in_axes)} arguments, got {len(args)}.")
        sizes = {jnp.shape(a)[0] for a, ax in zip(args, in_axes, strict=True) if ax == 0}
        if len(sizes) != 1:
            raise ValueError(f"batched arguments differ in length: {sorted(sizes)}.")
        return sizes.pop()

    @jax.jit
    def run(*args):
        n = batch_size(args)
        args = tuple(pad_leading(a, multiple) if ax == 0 else a
                     for a, ax in zip(args, in_axes, strict=True))
        out = inner(*args)
        return jax.tree.map(lambda x: x[:n], out)

    threads = cpu_threads(mesh)
    if threads == 1:
        return run
    return _Concurrent(run, batch_size, in_axes, threads, multiple, mesh.devices.ravel()[0])


def cpu_threads(mesh: Mesh | None = None) -> int:
    """How many parts of its batch a `shard_batch` program on `mesh` runs at once.

    The host's cores (`os.sched_getaffinity`) when `mesh` is one CPU device, else 1.
    The `JAXROBUST_CPU_THREADS` environment variable sets the number; 1 turns the
    concurrency off.
    """
    devices = (mesh or local_mesh()).devices.ravel()
    if devices.size != 1 or devices[0].platform != "cpu":
        return 1
    env = os.environ.get("JAXROBUST_CPU_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"JAXROBUST_CPU_THREADS={env!r} is not a positive whole number; "
                             "set it to e.g. 1 (no concurrency) or the number of cores.")
        return int(env)
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def workers(mesh: Mesh | None = None) -> int:
    """Parts a `shard_batch` program on `mesh` splits its batch into: one per device,
    times `cpu_threads(mesh)` on one CPU device. An engine that wants each part to see
    `k` images gives it `k * workers(mesh)` at a time."""
    mesh = mesh or local_mesh()
    return mesh.devices.size * cpu_threads(mesh)


_POOL = None
_POOL_NAME = "jaxrobust-cpu"


def _pool(threads: int):
    import concurrent.futures

    global _POOL
    if _POOL is None or _POOL._max_workers < threads:
        if _POOL is not None:
            _POOL.shutdown(wait=False)  # its running parts finish; new ones go to the new pool
        _POOL = concurrent.futures.ThreadPoolExecutor(threads, _POOL_NAME)
    return _POOL


class _Concurrent:
    """`shard_batch`'s program on one CPU device, run on `threads` equal parts of the
    batch at once from a thread pool, the outputs joined.

    XLA's CPU runtime runs an elementwise fusion, a `while` loop or a sort on the
    thread that called the program (only convolutions and matrix products use its own
    thread pool), so one call keeps one core busy for most of its time. Parts called
    from several threads keep every core busy, as one device per core would, without
    changing the devices JAX shows. The batch is padded as `threads` devices would pad
    it (copies of its first element), so each part has the shape one of `threads`
    devices would get. Under a trace (a caller's `jit`), from one of the pool's own
    threads, and for `lower`, it is the plain jitted program.

    Each part cuts its rows out of the whole batch inside its own compiled program (a
    `dynamic_slice` that XLA fuses into the reads), and each thread copies its part's
    outputs into one 64-byte-aligned host buffer per output, which becomes the result
    without another copy (`jax.device_put(..., may_alias=True)`; key arrays are joined
    on the device). Eager slicing and a `jnp.concatenate` on the calling thread were a
    large share of a call that computes for a few milliseconds (docs/architecture.md).
    """

    def __init__(self, run, batch_size, in_axes, threads: int, multiple: int, device):
        self._run, self._batch_size, self._in_axes = run, batch_size, in_axes
        self._threads, self._multiple, self._device = threads, multiple, device
        self.lower = run.lower

        @functools.partial(jax.jit, static_argnums=(0,))
        def part(size, i, *args):
            return run(*(lax.dynamic_slice_in_dim(a, i * size, size) if ax == 0 else a
                         for a, ax in zip(args, in_axes, strict=True)))

        self._part = part

    def __call__(self, *args):
        if (threading.current_thread().name.startswith(_POOL_NAME)
                or any(is_traced(a) for a in jax.tree.leaves(args))):
            return self._run(*args)
        n = self._batch_size(args)
        if n == 0:
            return self._run(*args)
        parts = self._threads
        size = -(-n // (parts * self._multiple)) * self._multiple  # rows per part
        # on the device once (a host array would be copied by every part), padded as
        # `parts` devices would pad it
        args = [pad_leading(_on_device(a, self._device), size * parts) if ax == 0 else a
                for a, ax in zip(args, self._in_axes, strict=True)]
        lock = threading.Lock()
        joined = []  # per output leaf: a host buffer for the whole batch, or None

        def part(i):
            out = self._part(size, np.int32(i), *args)
            leaves = jax.tree.leaves(out)
            with lock:
                if not joined:  # the first part to finish allocates
                    joined.extend(None if jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended)
                                  else _aligned_empty((n,) + x.shape[1:], x.dtype)
                                  for x in leaves)
            rows = slice(i * size, min((i + 1) * size, n))
            for buffer, x in zip(joined, leaves, strict=True):
                if buffer is not None and rows.stop > rows.start:
                    np.copyto(buffer[rows], np.asarray(x)[: rows.stop - rows.start])
            return out

        outs = list(_pool(parts).map(part, range(parts)))
        leaves = [jnp.concatenate(xs)[:n] if buffer is None
                  else jax.device_put(buffer, self._device, may_alias=True)
                  for buffer, *xs in zip(joined, *(jax.tree.leaves(o) for o in outs),
                                         strict=True)]
        return jax.tree.unflatten(jax.tree.structure(outs[0]), leaves)


def _on_device(a, device):
    """`a` on `device`: as it is when it already lies there whatever its sharding (a
    batch placed on a one-device mesh, `place_batch`), else `jax.device_put`: putting
    it again would copy it (a mesh sharding is not the device's own) and costs the
    calling thread ~1-3 ms per call of a few images."""
    if isinstance(a, jax.Array) and a.sharding.device_set == {device}:
        return a
    return jax.device_put(a, device)


def _aligned_empty(shape, dtype, align: int = 64) -> np.ndarray:
    """An uninitialised host array whose data start at a multiple of `align` bytes
    (what `jax.device_put(..., may_alias=True)` needs to use it without a copy)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def initialize_processes(coordinator: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None, *, timeout: float = 300.0) -> bool:
    """Joins `jax.distributed` (one call per process, before any JAX computation).

    Args:
        coordinator: `HOST:PORT` of process 0 (it runs the coordinator there); default
            the `JAX_COORDINATOR_ADDRESS` environment variable.
        num_processes, process_id: default `JAX_NUM_PROCESSES` / `JAX_PROCESS_ID`.
            With no coordinator anywhere, nothing is done (one process), unless
            `coordinator="auto"`: JAX's own detection (Slurm, Open MPI, Cloud TPU).
        timeout: seconds to wait for the coordinator.

    A process of the job that dies can be rerun with its own command: the job is
    made recoverable (`jax_enable_recoverability`), so it rejoins and the others go on
    (the sweep exchanges nothing through JAX). At exit, process 0 waits for the others
    to leave before it stops the coordination service.

    Returns:
        True when several processes were joined.

    Raises:
        ValueError: a missing or malformed setting, or an unreachable coordinator
            (checked before JAX tries to connect, so that it fails with this message
            instead of aborting the process).
    """
    import socket
    import time

    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator is None:
        return False
    if coordinator == "auto":
        jax.distributed.initialize(initialization_timeout=int(timeout))
        return jax.process_count() > 1
    if num_processes is None and "JAX_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in os.environ:
        process_id = int(os.environ["JAX_PROCESS_ID"])
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator {coordinator!r} is not HOST:PORT, e.g. 10.0.0.1:1234.")
    if num_processes is None or process_id is None:
        raise ValueError("--coordinator needs --num-processes N and --process-id I (or "
                         "JAX_NUM_PROCESSES and JAX_PROCESS_ID).")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process id {process_id} is outside 0..{num_processes - 1}.")
    if process_id > 0:  # process 0 starts the coordinator; the others must reach it
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise ValueError(f"coordinator {coordinator} unreachable after {timeout:g} "
                                     f"s ({e}); start process 0 with the same --coordinator, "
                                     "or check the address and port.") from None
                time.sleep(0.5)
    # The sweep exchanges nothing through JAX, so a process may die and be rerun while
    # the others go on: the coordination service lets a restarted task rejoin.
    jax.config.update("jax_enable_recoverability", True)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=int(timeout))
    import atexit

    atexit.register(_leave, process_id, num_processes)  # runs before JAX's own exit hook
    return True


def _leave(process_id: int, num_processes: int, wait_s: float = 120.0) -> None:
    """An orderly exit from `jax.distributed`: the other processes say they are leaving
    and disconnect; process 0 (which runs the coordination service) waits for them (at
    most `wait_s`) before it stops the service. Without this, a process that finished
    last (a rerun one, say) would find the service gone and be aborted by JAX."""
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        return
    try:
        if process_id == 0:
            for i in range(1, num_processes):
                client.blocking_key_value_get(f"jaxrobust/leaving/{i}", int(wait_s * 1000))
        else:
            client.key_value_set(f"jaxrobust/leaving/{process_id}", "1",
                                 allow_overwrite=True)
            jax.distributed.shutdown()
    except Exception:  # noqa: BLE001 - a process that never comes back: exit anyway
        pass
