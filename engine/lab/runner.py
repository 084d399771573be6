"""A run, top to bottom: check everything, load data and model, run each method, write result files.

The recipe never opens the store: it writes result files (store.write_*), which the CLI or the
dashboard ingests. Everything that can be wrong with the inputs is checked before any work starts.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from engine import store
from engine.lab import checks
from engine.methods.cluster import ensure_clusters
from engine.data.dataset import load_dataset, repeated_targets
from engine.training.evaluate import ALL_METRICS, persona_blind_scores, persona_means, persona_means_by_kind, primary_metric
from engine.methods.common import Context, resolve_method
from engine.models.loading import load_model, pick_device
from engine.store import new_run_id
from engine.training.config import ConfigError, TrainConfig


@dataclass
class RunSpec:
    data: str                     # JSONL path, or "sim" / "sim:personas=8,..." for the simulator
    model: str = "smollm2-135m"
    methods: list[str] = field(default_factory=lambda: ["base", "unified"])
    seed: int = 0
    name: str | None = None
    device: str | None = None     # None/"auto": CUDA when present
    precision: str = "auto"
    train: dict = field(default_factory=dict)    # TrainConfig fields
    options: dict = field(default_factory=dict)  # method options: cluster_k, merge_k, ...
    metric: str | None = None     # the primary metric (`score`); None: chosen from the data (engine.training.evaluate)
    study: dict | None = None     # {"study_id", "coords_json"} when the run is a point of a study (engine.lab.study)
    ray: str | None = None        # a Ray cluster's address ("auto", host:port): the heavy work goes there

    def check(self) -> TrainConfig:
        """Raises ConfigError naming what is wrong; returns the training config."""
        if not self.methods:
            raise ConfigError("methods: give at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: duplicated in {self.methods}")
        for m in self.methods:
            resolve_method(m)
        if self.methods == ["routed"]:
            raise ConfigError("methods: routed picks, per persona, among the run's other methods; add at least one")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()):
            raise ConfigError(f"ray must be a cluster address such as auto or 10.0.0.5:6379, got {self.ray!r}")
        if self.metric is not None and self.metric not in ALL_METRICS:
            raise ConfigError(f"metric must be one of {', '.join(ALL_METRICS)}, got {self.metric!r}")
        if not isinstance(self.train, dict) or not isinstance(self.options, dict):
            raise ConfigError("train and options must be mappings of names to values")
        checks.check_options(self.options)
        checks.check_train_values(self.train)
        checks.check_device(self.device)
        cfg = TrainConfig.from_dict(self.train)
        checks.check_config(cfg, self.model)
        return cfg

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**d)


def run_order(methods: list[str]) -> list[str]:
    """The methods in the order given, `routed` last: it chooses among the others' results."""
    return [m for m in methods if m != "routed"] + [m for m in methods if m == "routed"]


def reset_peak_memory(device) -> None:
    """Start a method's own peak-memory window, so a method is not charged with an earlier one's peak."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak RSS (VmHWM) to its current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # elsewhere the CPU peak counts from the process start


def peak_memory_mb(device) -> float:
    """Peak memory since reset_peak_memory: CUDA allocator bytes, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, since the start


def execute_run(spec: RunSpec, results_dir, progress=None, run_id: str | None = None, job_id: str | None = None,
                on_method_done=None, lm=None, skip=()) -> str:
    """Run every method of the spec; one result folder per finished method. Returns the run id.

    lm: the spec's model already loaded (a study loads it once); skip: methods already finished in this
    run's folder (a resumed study).
    """
    cfg = spec.check()
    dataset = load_dataset(spec.data, context_window=cfg.context_window)
    checks.check_data(spec.methods, dataset)
    metric = primary_metric(dataset, spec.metric)  # a metric the data cannot have fails here, before any write
    repeats, n_test = repeated_targets(dataset, "test")
    results_dir = Path(results_dir)
    run_id = run_id or new_run_id()
    device = pick_device(spec.device)
    run = {
        "run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(), "finished_at": None,
        "name": spec.name or f"{spec.model} · {','.join(spec.methods)}", "status": "running",
        "dataset": dataset.source, "dataset_hash": dataset.hash, "task": dataset.task,
        "n_personas": len(dataset.personas), "model": spec.model, "device": str(device), "seed": spec.seed,
        "methods": ",".join(spec.methods), "error": None, "job_id": job_id,
        "artifacts_dir": str(results_dir.resolve()), "metric": metric, **(spec.study or {}),
        "config_json": json.dumps({**asdict(spec), "train": cfg.to_dict(), "metric": metric,
                                   "test_targets_repeating_train": [repeats, n_test]}, sort_keys=True),
    }
    if progress:
        progress("load model", 0, 1)
    if lm is None:
        lm = load_model(spec.model, device=spec.device, precision=spec.precision)  # a bad name fails before any write
    checks.check_loaded_model(lm.model, cfg, spec.model)
    print(f"precision: {lm.precision} ({lm.precision_reason})", file=sys.stderr, flush=True)
    backend = None
    if spec.ray:  # a cluster that is not there fails here, before any write
        if progress:
            progress("ray: start actors", 0, 1)
        from engine.backends.ray import RayBackend
        backend = RayBackend(spec.ray, spec.model, lm.precision, run_id)
        cluster = backend.describe()
        run["device"] = f"ray: {cluster['actors']} actors on {cluster['nodes']} nodes"
        print(f"ray: {cluster}", file=sys.stderr, flush=True)
    run["config_json"] = json.dumps({**json.loads(run["config_json"]), "precision_resolved": {
        "precision": lm.precision, "reason": lm.precision_reason, "calibration": lm.calibration},
        **({"backend": cluster} if backend else {})}, sort_keys=True)
    counts = {s: dataset.by_persona(s) for s in ("train", "val", "test")}
    try:
        store.write_run_file(results_dir, run)
        store.write_run_table(results_dir, "personas", _personas_frame(dataset, counts))
    except BaseException:  # the block below (which closes it on every path) is not reached
        if backend:
            backend.close()
        raise
    try:
        blind = persona_blind_scores(dataset, metric)
        if blind is not None:
            store.write_run_table(results_dir, "persona_blind", pd.concat(
                [persona_means(blind).assign(kind="all"), persona_means_by_kind(blind)], ignore_index=True))
        ctx = Context(lm=lm, dataset=dataset, cfg=cfg, seed=spec.seed, options=spec.options, progress=progress,
                      artifacts_dir=results_dir / "adapters", metric=metric, backend=backend)
        ctx.validate = "routed" in spec.methods
        for method in run_order(spec.methods):
            if method in skip:
                continue
            torch.manual_seed(spec.seed)
            reset_peak_memory(device)
            ctx.current = method
            mark = len(backend.shard_seconds) if backend else 0
            out = resolve_method(method)(ctx)
            if backend:
                out.details["ray_shards"] = backend.shard_seconds[mark:]
            ctx.finished[method] = out
            per_persona = persona_means(out.predictions)
            summary = store.method_summary(
                method, per_persona, train_seconds=out.train_seconds, eval_seconds=out.eval_seconds,
                peak_mem_mb=peak_memory_mb(device), trainable_params=out.trainable_params,
                n_adapters=out.n_adapters, device=str(device), train_tokens=out.train_tokens,
                tokens_per_second=out.tokens_per_second, final_loss=out.final_loss,
                epochs_trained=(out.details.get("epochs") or {}).get("mean"),
                details_json=json.dumps(out.details, default=str))
            store.write_method_files(results_dir, method, summary, {
                "persona_results": per_persona, "persona_kind_results": persona_means_by_kind(out.predictions),
                "predictions": out.predictions, **out.tables})
            if on_method_done:
                on_method_done(method)
        clusters = None
        if any(checks.needs_profile(m) for m in spec.methods):  # the map costs minutes at 10k personas: only
            if progress:                                          # for runs whose methods read the profiles
                progress("clusters: profile map", 0, 1)
            clusters = ensure_clusters(ctx)
        if clusters is not None:
            store.write_run_table(results_dir, "personas", _personas_frame(dataset, counts, clusters))
            store.write_run_table(results_dir, "cluster_k", clusters["k_scores"])
        run.update(status="done", finished_at=datetime.now(timezone.utc).isoformat())
    except BaseException as e:
        run.update(status="cancelled" if isinstance(e, KeyboardInterrupt) else "failed",
                   error=f"{type(e).__name__}: {e}", finished_at=datetime.now(timezone.utc).isoformat())
        raise
    finally:
        store.write_run_file(results_dir, run)
        if backend:
            backend.close()
    return run_id


def _personas_frame(dataset, counts, clusters=None):
    pids = list(dataset.personas)
    df = pd.DataFrame({
        "persona_id": pids, "profile": [dataset.personas[p] for p in pids],
        "n_train": [len(counts["train"][p]) for p in pids], "n_val": [len(counts["val"][p]) for p in pids],
        "n_test": [len(counts["test"][p]) for p in pids],
    })
    if clusters is not None:
        df = df.merge(clusters["personas"], on="persona_id", how="left")
    return df
