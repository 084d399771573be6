"""A run's heavy work on a Ray cluster; the run's driver stays one process that writes the result
files as always.

Actors keep the base model loaded: one per GPU, or one per PLL_RAY_CPUS_PER_ACTOR CPUs (default 4, at most a
node's CPUs) on a CPU cluster. A method's adapters are cut into contiguous shards of about equal tokens, each
trained in one batched pass on one actor; the personas' test (and val) examples are cut the same way and
answered on the actors holding their adapters. Adapter states, training stats and predictions come back to
the driver. Every adapter draws from its own seed streams (engine.training.trainer), so a shard trains exactly what
one process would: sharding changes float summation order only (tests/test_ray.py states the tolerance).

Faults: an actor that dies is restarted by Ray (on another node if its node is gone) and its shard re-run
(`max_restarts`, `max_task_retries`); a shard that still fails fails the method with the shard and node
named, before any of the method's result files are written. The actors belong to the driver: cancelling the
job (which ends the driver) ends them and their work.

Ray is optional: nothing here imports it until a run asks for a cluster. Every node needs this lab at the
same path (a shared filesystem or the same image): actors import `engine` and load the packaged models there.
"""
from __future__ import annotations

import importlib
import itertools
import os
import socket
import time
from dataclasses import dataclass

import pandas as pd

from engine.training.config import ConfigError
from engine.training.trainer import TrainStats
from engine import settings

RAY_PIN = "ray==2.60.0"
POLL_S = 1.0              # how often the driver asks the actors how far their shards are
NAMESPACE = "persona-lora-lab"
ACTOR_RESTARTS = 2        # Ray restarts a dead actor this often per run, and re-runs its shard


class RayUnavailable(ConfigError):
    """No Ray here, or no cluster at the address: the message says which and what to do."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable(f"Ray is not installed here: pip install '{RAY_PIN}' (requirements.txt), or run on this "
                             "machine (no --ray, PLL_RAY_ADDRESS unset)") from None
    return ray


def resolve_address(address: str) -> str:
    """host:port of the cluster's GCS ("auto": the cluster `ray start --head` started on this machine), checked to
    answer within 3 s; raises RayUnavailable naming the address otherwise."""
    _import_ray()  # a clear error when Ray is missing
    from ray._private.services import canonicalize_bootstrap_address_or_die, parse_address
    try:
        resolved = canonicalize_bootstrap_address_or_die(address) if address == "auto" else address
        host, port = parse_address(resolved)
    except (ConnectionError, ValueError, TypeError) as e:
        raise RayUnavailable(f"no Ray cluster at '{address}': {e}") from None
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise RayUnavailable(f"no Ray cluster answers at '{address}' ({host}:{port}): {e.strerror or e}. Start one "
                             "(`ray start --head`), fix PLL_RAY_ADDRESS, or run on this machine") from None
    return f"{host}:{port}"


def shards(sizes: list[int], n: int) -> list[list[int]]:
    """Indices 0..len(sizes)-1 cut into at most n contiguous, non-empty runs of about equal total size: each cut
    where the running total comes closest to its share (a cut at the first total past it can leave 3/4 of
    the work on one side)."""
    n = max(1, min(n, len(sizes)))
    prefix = list(itertools.accumulate(sizes))
    total, bounds = (prefix[-1] if prefix else 0), [0]
    for k in range(1, n):
        target = total * k / n
        bounds.append(min(range(bounds[-1] + 1, len(sizes) - (n - k) + 1),
                          key=lambda b: (abs(prefix[b - 1] - target), b)))
    bounds.append(len(sizes))
    return [list(range(bounds[i], bounds[i + 1])) for i in range(n)]


def token_counts(lm, groups, cfg) -> list[int]:
    """Tokens each group trains on, as the trainer will encode them (truncated to max_length): what shards
    balance. Personas' dialogues differ in length several-fold, and long contexts are cut at max_length, so
    neither example counts nor text lengths track the work."""
    from engine.training.encode import encode_example
    return [sum(len(encode_example(lm.tokenizer, e, cfg).ids) for e in g) for g in groups]


def combine_stats(parts: list[TrainStats], offsets: list[int]) -> TrainStats:
    """One TrainStats from the shards' (adapters of shard k start at offsets[k]). Seconds are the sum over
    shards: a method is charged the device time it used, as in one process, not the cluster's wall time."""
    out = TrainStats(steps=max((p.steps for p in parts), default=0), tokens=sum(p.tokens for p in parts),
                     target_tokens=sum(p.target_tokens for p in parts), seconds=sum(p.seconds for p in parts),
                     validation_seconds=sum(p.validation_seconds for p in parts))
    for p in parts:
        out.epochs += list(p.epochs)
        out.best_epoch += list(p.best_epoch)
    n_adapters = [len(p.epochs) or 1 for p in parts]
    for step in range(max((len(p.losses) for p in parts), default=0)):  # mean per-adapter loss, over shards
        at = [(p.losses[step], w) for p, w in zip(parts, n_adapters) if step < len(p.losses)]
        out.losses.append(sum(v * w for v, w in at) / sum(w for _, w in at))
    for epoch in range(max((len(p.val_losses) for p in parts), default=0)):
        merged = {}
        for p, off in zip(parts, offsets):
            if epoch < len(p.val_losses):
                merged.update({off + int(a): v for a, v in p.val_losses[epoch].items()})
        out.val_losses.append(merged)
    return out


def _connect(ray, address: str) -> bool:
    """ray.init to the cluster unless this process is connected already; True when this call connected."""
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith(("PLL_", "HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(settings.PROJECT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p])
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, runtime_env={"env_vars": env},
             logging_level="ERROR")
    return True


def actor_slots(ray, address: str) -> list[tuple[str, int, int]]:
    """(node id, CPUs, GPUs) of each actor to start: one per GPU, else one per PLL_RAY_CPUS_PER_ACTOR CPUs (default
    4, at most a node's CPUs)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    per = int(os.environ.get("PLL_RAY_CPUS_PER_ACTOR", "4"))
    slots = []
    for n in nodes:
        if gpus:
            slots += [(n["NodeID"], 1, 1)] * int(n["Resources"].get("GPU", 0))
        else:
            cpus = int(n["Resources"].get("CPU", 0))
            each = max(1, min(per, cpus))
            slots += [(n["NodeID"], each, 0)] * (cpus // each)
    if not slots:
        raise RayUnavailable(f"the Ray cluster at {address} has no CPU or GPU to place an actor on")
    return slots


def _start(ray, actor_class, slots, model: str, precision: str, names=None, **options) -> list:
    """One actor of `actor_class` per slot, each on its node (soft affinity), restarted by Ray if it dies."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    cls = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS, **options)(actor_class)
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return [cls.options(num_cpus=c, num_gpus=g, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True),
                        **({"name": names[i], "namespace": NAMESPACE} if names else {})).remote(model, precision, c, env)
            for i, (node, c, g) in enumerate(slots)]


def _stop(ray, actors: list, opened: bool) -> None:
    """End the actors (ours: nobody else uses them) and the connection if this process opened it."""
    for a in actors:
        try:
            ray.kill(a)
        except Exception:  # noqa: BLE001 - an actor already gone is what we want
            pass
    if opened and ray.is_initialized():
        ray.shutdown()


def _merged(lm, merged):
    import contextlib

    from engine.training.lora import merged_adapter
    return merged_adapter(lm.model, *merged) if merged else contextlib.nullcontext()


def _load_here(model: str, precision: str, threads: int, env: dict) -> tuple[str, object, str]:
    """(device, loaded model, node id) in an actor's process: its GPU if Ray gave it one, else its CPUs. The
    engine is imported now, so the first piece of work is timed as its own."""
    os.environ.update(env)
    import ray
    import torch
    from engine.models.threads import choose_threads
    free = choose_threads().threads  # the actor's CPUs, unless other work on the node already holds some
    torch.set_num_threads(min(threads, free) if threads else free)
    importlib.import_module("engine.backends.local")  # and with it the trainer and evaluation
    from engine.models.loading import load_model
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return device, load_model(model, device=device, precision=precision), ray.get_runtime_context().get_node_id()


class ModelActor:
    """Holds the base model on its GPU or CPUs; trains and answers the shards it is given."""

    def __init__(self, model: str, precision: str, threads: int, env: dict):
        self.device, self.lm, self.node = _load_here(model, precision, threads, env)
        self.state = {"phase": "", "done": 0, "total": 0}

    def where(self) -> dict:
        import socket as _socket
        return {"node": self.node, "host": _socket.gethostname(), "pid": os.getpid(), "device": self.device,
                "precision": self.lm.precision}

    def progress(self) -> dict:
        return dict(self.state)

    def _report(self, phase, done, total, **_):
        self.state = {"phase": phase, "done": int(done), "total": int(total)}

    def train(self, groups, val_groups, seeds, cfg, seed, phase, merged):
        from engine.training.lora import adapter_state, remove_lora
        from engine.backends.local import train_adapters
        t0 = time.time()
        with _merged(self.lm, merged):
            stats = train_adapters(self.lm, groups, val_groups, seeds, cfg, seed, self._report, phase)
            try:
                states = [adapter_state(self.lm.model, i) for i in range(len(groups))]
            finally:
                remove_lora(self.lm.model)
        return states, stats, time.time() - t0

    def evaluate(self, dataset, examples, adapters, states, lora, cfg, metric, merged, phase):
        from engine.training.evaluate import evaluate
        from engine.training.lora import inject_lora, load_adapter_states, remove_lora
        t0 = time.time()
        self._report(phase, 0, len(examples))
        with _merged(self.lm, merged):
            if states:
                inject_lora(self.lm.model, len(states), lora["r"], lora["alpha"], 0.0, lora["targets"])
            try:
                if states:
                    load_adapter_states(self.lm.model, states)
                preds = evaluate(self.lm, dataset, examples, adapters, cfg, self._report, metric)
            finally:
                if states:
                    remove_lora(self.lm.model)
        return preds, time.time() - t0


@dataclass
class Shard:
    actor: int
    ref: object
    label: str


class RayBackend:
    """A run's actors on the cluster at `address`, with engine.backends.local.LocalBackend's interface: `train` and
    `evaluate` are what methods hand over. close() ends the actors (and the connection, if this opened it)."""

    def __init__(self, address: str, model: str, precision: str, run_id: str = "run"):
        ray = _import_ray()
        self.address = resolve_address(address)
        self.ray, self.run_id = ray, run_id
        self._opened = _connect(ray, self.address)
        try:
            self._start_actors(model, precision)
        except BaseException:
            self.close()
            raise

    def _start_actors(self, model: str, precision: str):
        ray = self.ray
        self.slots = actor_slots(ray, self.address)
        # named, so an operator (and the fault test) can find a run's actors; threaded, so progress() answers
        # while a shard trains
        self.actors = _start(ray, ModelActor, self.slots, model, precision, max_concurrency=2,
                             names=[f"pll-{self.run_id}-{i}" for i in range(len(self.slots))])
        self.where = ray.get([a.where.remote() for a in self.actors])  # fails here if the model does not load
        self.shard_seconds: list[dict] = []  # every shard's {phase, shard, actor, node, seconds}

    def describe(self) -> dict:
        """What the run stores about its cluster (config_json.backend)."""
        return {"backend": "ray", "address": self.address, "actors": len(self.actors),
                "nodes": len({w["node"] for w in self.where}), "devices": sorted({w["device"] for w in self.where}),
                "cpus_per_actor": self.slots[0][1], "gpus": sum(s[2] for s in self.slots)}

    def close(self):
        _stop(self.ray, getattr(self, "actors", []), self._opened)
        self.actors = []

    # ------------------------------------------------------------------ work

    def _wait(self, ctx, shards_: list[Shard], phase: str) -> list:
        """Results of the shards in order, reporting their progress meanwhile; a failed shard fails the phase."""
        ray = self.ray
        pending = [s.ref for s in shards_]
        busy = sorted({s.actor for s in shards_})
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            try:
                states = dict(zip(busy, ray.get([self.actors[i].progress.remote() for i in busy], timeout=10)))
            except Exception:  # noqa: BLE001 - a restarting actor cannot say; the next poll will
                continue
            shown = [states.get(s.actor, {}) for s in shards_]
            done, total = sum(st.get("done", 0) for st in shown), sum(st.get("total", 0) for st in shown)
            ctx.report(phase, done, max(total, 1), shards=" · ".join(
                f"{s.label} {st.get('done', 0)}/{st.get('total', 0)}" for s, st in zip(shards_, shown)),
                actors=len(busy), nodes=len({self.where[i]["node"] for i in busy}),
                cpus=sum(self.slots[i][1] for i in busy), gpus=sum(self.slots[i][2] for i in busy))
        out = []
        for s in shards_:
            try:
                out.append(ray.get(s.ref))
            except ray.exceptions.RayError as e:
                w = self.where[s.actor]
                raise RuntimeError(f"{phase}: {s.label} failed on Ray node {w['host']} ({w['node'][:8]}) after "
                                   f"{ACTOR_RESTARTS} retries: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        return out

    def train(self, ctx, groups, val_groups, seeds, phase):
        """(adapter states in the groups' order, combined TrainStats) of the groups trained in shards."""
        cuts = shards(token_counts(ctx.lm, groups, ctx.cfg), len(self.actors))
        refs = [Shard(k, self.actors[k].train.remote([groups[i] for i in idx], [val_groups[i] for i in idx],
                                                     [seeds[i] for i in idx], ctx.cfg, ctx.seed, phase,
                                                     ctx.merged_base),
                      f"shard {k + 1}/{len(cuts)}") for k, idx in enumerate(cuts)]
        results = self._wait(ctx, refs, phase)
        states = [s for r in results for s in r[0]]
        offsets = [idx[0] for idx in cuts]
        for k, r in enumerate(results):
            self._log(phase, k, len(cuts), r[2], tokens=r[1].tokens, adapters=len(cuts[k]))
        return states, combine_stats([r[1] for r in results], offsets)

    def evaluate(self, ctx, examples, adapters, phase) -> pd.DataFrame:
        """Predictions of `examples` (adapter per example, or None: the model's single adapter or none), each
        persona's examples answered on one actor with only the adapters they use."""
        from engine.training.lora import adapter_state, lora_layers
        layers = lora_layers(ctx.lm.model)
        n_states = next(iter(layers.values())).n_adapters if layers else 0
        lora = None
        if layers:
            first = next(iter(layers.values()))
            lora = {"r": first.r, "alpha": first.scaling * first.r, "targets": tuple(ctx.cfg.targets)}
        personas = list(dict.fromkeys(e.persona_id for e in examples))
        rows_of = {p: [] for p in personas}
        for i, e in enumerate(examples):
            rows_of[e.persona_id].append(i)
        cuts = shards([len(rows_of[p]) for p in personas], len(self.actors))
        if not hasattr(self, "_dataset") or self._dataset[0] is not ctx.dataset:
            self._dataset = (ctx.dataset, self.ray.put(ctx.dataset))
        refs, order = [], []
        for k, idx in enumerate(cuts):
            rows = [i for pi in idx for i in rows_of[personas[pi]]]
            order += rows
            if adapters is None:
                used, local = list(range(n_states)), None
            else:
                used = sorted({adapters[i] for i in rows})
                local = [used.index(adapters[i]) for i in rows]
            states = [adapter_state(ctx.lm.model, a) for a in used]
            refs.append(Shard(k, self.actors[k].evaluate.remote(
                self._dataset[1], [examples[i] for i in rows], local, states, lora, ctx.cfg, ctx.metric,
                ctx.merged_base, phase), f"shard {k + 1}/{len(cuts)}"))
        results = self._wait(ctx, refs, phase)
        for k, r in enumerate(results):
            self._log(phase, k, len(cuts), r[1])
        preds = pd.concat([r[0] for r in results], ignore_index=True)
        preds.index = order
        return preds.sort_index().reset_index(drop=True)

    def _log(self, phase, k, n, seconds, **extra):
        w = self.where[k]
        self.shard_seconds.append({"phase": phase, "shard": k, "of": n, "host": w["host"], "node": w["node"][:8],
                                   "seconds": round(seconds, 3), **extra})
