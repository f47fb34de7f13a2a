"""A small pool of Ray tasks: run one function over many argument tuples, at most N at a time."""

from __future__ import annotations

from collections.abc import Callable


def run_all(fn: Callable, calls: list[tuple[str, tuple, dict]], limit: int) -> dict[str, tuple[bool, object]]:
    """Run ``fn(*args)`` as a Ray task for each ``(key, args, options)`` of ``calls``, with at most
    ``limit`` running at once (``options`` go to ``.options()``: ``num_cpus``, ``name``, ...).

    Returns:
        ``{key: (True, return value)}``, or ``{key: (False, one-line error)}`` for a task that
        raised or died (node lost, OOM); the others go on.
    """
    import ray

    task = ray.remote(max_retries=0)(_call)  # fn travels as an argument: it may be a functools.partial
    queue, running, out = list(calls), {}, {}
    while queue or running:
        while queue and len(running) < max(1, limit):
            key, args, options = queue.pop(0)
            running[task.options(**options).remote(fn, *args)] = key
        ready, _ = ray.wait(list(running), num_returns=1)
        key = running.pop(ready[0])
        try:
            out[key] = (True, ray.get(ready[0]))
        except Exception as e:  # noqa: BLE001 - recorded for the caller, the pool goes on
            out[key] = (False, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return out


def _call(fn: Callable, *args):
    return fn(*args)
