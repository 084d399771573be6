"""A run, top to bottom: check everything, load data and model, run each method, write result files.

The recipe never opens the store: it writes result files (store.write_*), which the CLI or the
dashboard ingests. Everything that can be wrong with the inputs is checked before any work starts.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from engine import settings, store
from engine.backends.local import LocalBackend
from engine.data.dataset import repeated_targets
from engine.lab import checks
from engine.lab.spec import RunSpec
from engine.methods import registry
from engine.methods.cluster import ensure_clusters
from engine.methods.context import Context
from engine.models import threads
from engine.models.loading import load_model, pick_device
from engine.store import owner
from engine.training.evaluate import persona_blind_scores, persona_means, persona_means_by_kind


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


class _Heartbeat:
    """The run's progress callback, wrapped: every HEARTBEAT_EVERY_S of work the run file's `heartbeat_at` is
    refreshed (once the run file exists), so another host can tell a working run from a dead one."""

    def __init__(self, results_dir: Path, run: dict, progress):
        self.results_dir, self.run, self.progress = results_dir, run, progress
        self.started, self.last = False, time.monotonic()

    def __call__(self, phase, done, total, **info):
        if self.progress:  # first: a job's progress stops the run when its folder was deleted
            self.progress(phase, done, total, **info)
        now = time.monotonic()
        if self.started and now - self.last >= owner.HEARTBEAT_EVERY_S:
            self.last = now
            self.run["heartbeat_at"] = owner.now_iso()
            try:  # never recreates a deleted results folder
                store.write_json_atomic(self.results_dir / "run.json", self.run)
            except OSError:  # a full disk, a folder gone: the run meets it where it writes its results
                pass


def execute_run(spec: RunSpec, results_dir, progress=None, run_id: str | None = None, job_id: str | None = None,
                on_method_done=None, lm=None, skip=()) -> str:
    """Run every method of the spec; one result folder per finished method. Returns the run id.

    lm: the spec's model already loaded (a study loads it once); skip: methods already finished in this
    run's folder (a resumed study). The run file records who runs it (host, pid, process start) and a heartbeat,
    and ends with the run's outcome on every path this process survives (done, failed, cancelled); a process
    killed outright leaves `running`, which the lab's commands then find and store as `interrupted`.
    """
    checked = spec.validate()  # everything but the model, before any write
    cfg, dataset, metric = checked.cfg, checked.dataset, checked.metric
    for note in dataset.notes:  # the split file used, what of it was ignored or left out: the CLI's stderr, a job's log
        print(f"note: {note}", file=sys.stderr, flush=True)
    repeats, n_test = repeated_targets(dataset, "test")
    if repeats:  # allowed (a persona may ask the same thing twice), but the test then measures memory in part
        print(f"warning: {repeats} of {n_test} test targets repeat a train target of their persona (context and "
              "reply): on those the test measures recall of training data", file=sys.stderr, flush=True)
    results_dir = Path(results_dir)
    run_id = run_id or settings.new_id()
    device = pick_device(spec.device)
    run = _run_row(spec, checked, run_id, results_dir, device, job_id, (repeats, n_test))
    progress = _Heartbeat(results_dir, run, progress)
    said = lambda line: print(line, file=sys.stderr, flush=True)
    choice = threads.apply(threads.choose_threads(spec.threads))
    said(f"threads: {choice.threads} ({choice.reason})")
    refit = threads.Refit(spec.threads, log=said)
    if progress:
        progress("load model", 0, 1)
    if lm is None:
        lm = load_model(spec.model, device=spec.device, precision=spec.precision)  # a bad name fails before any write
    checks.check_loaded_model(lm.model, cfg, spec.model)
    print(f"precision: {lm.precision} ({lm.precision_reason})", file=sys.stderr, flush=True)
    backend = LocalBackend()
    if spec.ray:  # a cluster that is not there fails here, before any write
        if progress:
            progress("ray: start actors", 0, 1)
        from engine.backends.ray import RayBackend
        backend = RayBackend(spec.ray, spec.model, lm.precision, run_id)
    cluster = backend.describe()
    if cluster:
        run["device"] = f"ray: {cluster['actors']} actors on {cluster['nodes']} nodes"
        print(f"ray: {cluster}", file=sys.stderr, flush=True)
    run["config_json"] = json.dumps({**json.loads(run["config_json"]), "precision_resolved": {
        "precision": lm.precision, "reason": lm.precision_reason, "calibration": lm.calibration},
        **({"backend": cluster} if cluster else {})}, sort_keys=True)
    counts = {s: dataset.by_persona(s) for s in ("train", "val", "test")}
    try:
        store.write_run_file(results_dir, run)
    except BaseException:  # the block below (which closes it on every path) is not reached
        backend.close()
        raise
    progress.started = True
    try:
        store.write_run_table(results_dir, "personas", _personas_frame(dataset, counts))
        blind = persona_blind_scores(dataset, metric)
        if blind is not None:
            store.write_run_table(results_dir, "persona_blind", pd.concat(
                [persona_means(blind).assign(kind="all"), persona_means_by_kind(blind, metric)], ignore_index=True))
        ctx = Context(lm=lm, dataset=dataset, cfg=cfg, seed=spec.seed, options=spec.options, progress=progress,
                      artifacts_dir=results_dir / "adapters", metric=metric, backend=backend, between_epochs=refit)
        ctx.validate = any(registry.method(m).chooses for m in spec.methods)
        for method in registry.run_order(spec.methods):
            if method in skip:
                continue
            torch.manual_seed(spec.seed)
            reset_peak_memory(device)
            ctx.current = method
            mark = len(backend.shard_seconds)
            out = registry.function(method)(ctx)
            if spec.ray:
                out.details["ray_shards"] = backend.shard_seconds[mark:]
            ctx.finished[method] = out
            _write_method(results_dir, method, out, device, metric)
            if on_method_done:
                on_method_done(method)
        clusters = None
        if any(registry.needs_profile(m) for m in spec.methods):  # the map costs minutes at 10k personas: only
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
        run["config_json"] = json.dumps({**json.loads(run["config_json"]), "threads_used": {
            "initial": choice.to_dict(), "changes": refit.changes}}, sort_keys=True)
        try:
            store.write_run_file(results_dir, run)
        except OSError as e:  # a full disk: the error on its way out (or this one, after a run that got done) says so
            print(f"warning: {results_dir / 'run.json'}: could not record the run's outcome ({e})", file=sys.stderr,
                  flush=True)
            if run["status"] == "done":
                raise
        finally:
            backend.close()
    return run_id


def _run_row(spec: RunSpec, checked, run_id: str, results_dir: Path, device, job_id, repeated) -> dict:
    """The run's row as it starts: what ran on what, with the full config (the spec, the resolved training
    config and metric, and how many test targets repeat a train target), and who runs it (host, pid, process
    start, heartbeat)."""
    repeats, n_test = repeated
    return {
        "run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(), "finished_at": None,
        **owner.me(), "heartbeat_at": owner.now_iso(),
        "name": spec.name or f"{spec.model} · {','.join(spec.methods)}", "status": "running",
        "dataset": checked.dataset.source, "dataset_hash": checked.dataset.hash, "task": checked.dataset.task,
        "n_personas": len(checked.dataset.personas), "model": spec.model, "device": str(device), "seed": spec.seed,
        "methods": ",".join(spec.methods), "error": None, "job_id": job_id,
        "artifacts_dir": str(results_dir.resolve()), "metric": checked.metric, **(spec.study or {}),
        "config_json": json.dumps({**asdict(spec), "train": checked.cfg.to_dict(), "metric": checked.metric,
                                   "test_targets_repeating_train": [repeats, n_test],
                                   "split_rule": checked.dataset.split_rule, "data_notes": checked.dataset.notes},
                                  sort_keys=True),
    }


def _write_method(results_dir: Path, method: str, out, device, metric: str) -> None:
    """A finished method's result folder: its summary row, per-persona (and per-kind) figures, predictions."""
    per_persona = persona_means(out.predictions)
    summary = store.method_summary(
        method, per_persona, train_seconds=out.train_seconds, eval_seconds=out.eval_seconds,
        peak_mem_mb=peak_memory_mb(device), trainable_params=out.trainable_params, n_adapters=out.n_adapters,
        device=str(device), train_tokens=out.train_tokens, tokens_per_second=out.tokens_per_second,
        final_loss=out.final_loss, epochs_trained=(out.details.get("epochs") or {}).get("mean"),
        details_json=json.dumps(out.details, default=str))
    store.write_method_files(results_dir, method, summary, {
        "persona_results": per_persona, "persona_kind_results": persona_means_by_kind(out.predictions, metric),
        "predictions": out.predictions, **out.tables})


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
