"""Whole runs on a Ray cluster's actors: a study's grid points, each run in one actor's process.

The actors are placed like engine.backends.ray's (one per GPU, or per PLL_RAY_CPUS_PER_ACTOR CPUs) and keep the
base model loaded between runs; each run writes its result files as a local run does.
"""
from __future__ import annotations

from pathlib import Path

from engine.backends.ray import _connect, _import_ray, _load_here, _start, _stop, actor_slots, resolve_address


class RunActor:
    """Holds the base model; runs whole runs (a study's grid points) one after another, here in one process."""

    def __init__(self, model: str, precision: str, threads: int, env: dict):
        self.device, self.lm, self.node = _load_here(model, precision, threads, env)

    def run(self, spec, results: str, run_id: str, skip: list) -> tuple[str, str, str]:
        from engine.lab.runner import execute_run
        execute_run(spec, Path(results), run_id=run_id, lm=self.lm, skip=set(skip))
        return run_id, results, self.node


class RunPool:
    """Actors placed like RayBackend's (one per GPU, or per PLL_RAY_CPUS_PER_ACTOR CPUs), each taking the next
    whole run when it is free; `with` ends them and the connection."""

    def __init__(self, address: str, model: str, precision: str):
        ray = _import_ray()
        self.ray, self.address = ray, resolve_address(address)
        self._opened = _connect(ray, self.address)
        try:
            self.actors = _start(ray, RunActor, actor_slots(ray, self.address), model, precision)
        except BaseException:
            self.__exit__()
            raise
        self.size = len(self.actors)
        self.nodes: list[str] = []

    def run(self, todo: list[tuple]):
        """(run_id, results folder) of each run as it finishes; a run that fails ends the study with its id."""
        from ray.util import ActorPool
        pool = ActorPool(self.actors)
        for spec, results, run_id, skip in todo:
            pool.submit(lambda a, v: a.run.remote(*v), (spec, results, run_id, skip))
        while pool.has_next():
            run_id, results, node = pool.get_next_unordered()
            self.nodes.append(node)
            yield run_id, results

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _stop(self.ray, getattr(self, "actors", []), self._opened)
