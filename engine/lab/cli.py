"""`python -m engine ...`: synth, run, study, runs, import, ingest, export, actions, calibrate (and the dashboard's
worker).

Exit codes:
    0    ok
    1    the run (or its store) failed while working: stored as failed where the store could be written, finished
         methods kept; a disk that filled up or a store found damaged only when the results were written is said
         so, with the command that lands the kept results later (`ingest`, into another store when it is damaged)
    2    bad input, refused before any work and nothing was written: a malformed file, an unknown method or model, a
         hyperparameter out of range, a store path that is not a usable store (a folder, another kind of file,
         another program's DuckDB database, a damaged store, no store at all for `runs`, `compare`, `export`), a
         disk too full to start a run, a results folder that cannot be ingested
    3    only when another process holds the store's lock past the wait: the results are kept in runs/<run_id>/
         and the message prints the `python -m engine ingest` command to run when the store is free
    130  cancelled (Ctrl-C, SIGTERM, SIGHUP): stored as cancelled, finished methods kept
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path

from engine import settings
from engine.analysis.report import print_runs
from engine.lab.landing import STORE_NOT_WRITTEN, Landing, check_run_location, existing_store, is_disk_full
from engine.lab.spec import PRECISIONS
from engine.methods.registry import known_methods
from engine.training.config import TrainConfig

TRAIN_FLAGS = {f.name: f for f in fields(TrainConfig)}


RAY_HELP = ("run the heavy work on the Ray cluster at ADDRESS (host:port, or auto for one `ray start --head` "
            "started here); default $PLL_RAY_ADDRESS, else this machine")


def _err(msg: str) -> int:
    print(msg, file=sys.stderr)
    return 2


class TqdmProgress:
    """A tqdm bar per phase on stderr."""

    def __init__(self):
        self.bar, self.phase = None, None

    def __call__(self, phase, done, total, **info):
        from tqdm import tqdm
        if phase != self.phase:
            self.close()
            self.phase, self.bar = phase, tqdm(total=total, desc=phase, file=sys.stderr, leave=True,
                                               dynamic_ncols=True, disable=None)
        self.bar.total = total
        self.bar.n = done
        if "loss" in info:
            self.bar.set_postfix(loss=f"{info['loss']:.3f}", refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _add_train_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("hyperparameters (defaults: engine.training.trainer.TrainConfig)")
    for name, f in TRAIN_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if name == "targets":
            g.add_argument(flag, help=f"comma-separated module names (default {','.join(f.default)})")
        elif f.type in ("int", int):
            g.add_argument(flag, type=int, help=f"default {f.default}")
        elif f.type in ("float", float):
            g.add_argument(flag, type=float, help=f"default {f.default}")
        else:
            g.add_argument(flag, help=f"default {f.default!r}")


def _train_overrides(args) -> dict:
    out = {}
    for name in TRAIN_FLAGS:
        v = getattr(args, name)
        if v is not None:
            out[name] = tuple(t.strip() for t in v.split(",") if t.strip()) if name == "targets" else v
    return out


def cmd_synth(args) -> int:
    from engine.data.dataset import dataset_from_records, repeated_targets
    from engine.training.evaluate import persona_blind_scores
    from engine.data.simulator import SIMULATOR_DEFAULTS, format_sim_spec, simulate, validate_knobs, write_jsonl
    knobs = {k: getattr(args, k) for k in SIMULATOR_DEFAULTS if getattr(args, k) is not None}
    try:
        knobs = validate_knobs({**SIMULATOR_DEFAULTS, **knobs})
    except ValueError as e:
        return _err(f"synth: {e}")
    if not args.out and not args.compare_to:
        return _err("synth: give --out FILE (write the data), --compare-to FILE (compare it with real data), or both")
    records = simulate(**knobs)
    if args.compare_to:
        from engine.data.dialogue_stats import compare_table, dialogue_stats
        try:
            real = dialogue_stats(args.compare_to)
        except (OSError, ValueError, KeyError, TypeError) as e:
            return _err(f"synth: --compare-to {args.compare_to}: {e}")
        print(compare_table(dialogue_stats(records), real, ("simulator", os.path.basename(args.compare_to.rstrip('/')))))
        print(f"simulator: {format_sim_spec(knobs)}")
    if not args.out:
        return 0
    write_jsonl(records, args.out)
    print(f"wrote {len(records)} dialogues of {knobs['personas']} personas to {args.out}", file=sys.stderr)
    ds = dataset_from_records(records, format_sim_spec(knobs))
    for split in ("val", "test"):
        n, total = repeated_targets(ds, split)
        print(f"{split} targets repeating a train target of their persona (context and reply): {n} of {total} "
              f"({100 * n / max(total, 1):.1f}%)", file=sys.stderr)
    blind = persona_blind_scores(ds, "action_f1")
    if blind is not None:
        from engine.analysis.report import ceiling_lines
        for line in ceiling_lines(blind):
            print(line, file=sys.stderr)
    return 0


FINAL_INGEST_TIMEOUT_S = 60.0  # at the end of a run: how long a locked store is waited for


def _set_handlers(handlers: dict) -> dict:
    """Install signal handlers (main thread only; elsewhere signals stay as they are); returns the previous ones."""
    previous = {}
    for sig, handler in handlers.items():
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return previous


def cmd_run(args) -> int:
    from engine import store
    from engine.data.dataset import DataError
    from engine.models.loading import ModelError
    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    from engine.training.config import ConfigError

    spec = RunSpec(data=args.data, model=args.model, methods=_methods(args), seed=args.seed, name=args.name,
                   device=args.device, precision=args.precision, train=_train_overrides(args),
                   options=_method_options(args), metric=args.metric, ray=settings.ray_address(args.ray),
                   splits=args.splits, threads=args.threads)
    path = settings.store_path(args.store)
    try:
        check_run_location(path)
    except store.StoreError as e:
        return _err(f"error: {e}")
    run_id = settings.new_id()
    results = settings.runs_dir(path) / run_id  # kept: the adapters for `export` live here
    progress = TqdmProgress()
    landing = Landing(run_id, results, path)
    after_method, finish = landing.after_method, landing.finish

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = _set_handlers({signal.SIGTERM: on_signal, signal.SIGHUP: on_signal,
                         signal.SIGINT: signal.getsignal(signal.SIGINT)})
    computed = False
    try:
        execute_run(spec, results, progress=progress, run_id=run_id, on_method_done=after_method)
        computed = True
        progress.close()
        code = finish(0, FINAL_INGEST_TIMEOUT_S)
    except (KeyboardInterrupt, Exception) as e:  # the boundary where a run's outcome is recorded and reported
        progress.close()
        _set_handlers(dict.fromkeys(old, signal.SIG_IGN))  # recording the outcome is not interrupted
        if computed:  # interrupted while waiting for a locked store: the run itself is done and kept
            print(f"run {run_id}: done; results kept in {results} but not yet in the store. Later:\n"
                  f"    python -m engine ingest {results} --store {path}", file=sys.stderr)
            return STORE_NOT_WRITTEN
        bad_input = isinstance(e, (DataError, ConfigError, ModelError, ValueError))
        stopped = isinstance(e, KeyboardInterrupt)
        full = is_disk_full(e)
        what = "the disk is full" if full else e if stopped else f"{type(e).__name__}: {e}"
        if not (results / "run.json").exists():  # stopped before any work: nothing (but maybe an empty folder) written
            if results.exists() and not any(results.iterdir()):
                results.rmdir()
            if bad_input:
                return _err(str(e) if isinstance(e, DataError) else f"error: {e}")
            print(f"{'' if stopped else 'error: '}run {run_id} {'cancelled' if stopped else 'failed'} before it "
                  f"started: {what}{f' ({e})' if full else ''}", file=sys.stderr)
            return 130 if stopped else 1
        outcome = f"run {run_id} {'cancelled' if stopped else 'failed'}: {what}"
        return finish(130 if stopped else 1, timeout=10.0, outcome=outcome if not full else f"{outcome} ({e})")
    finally:
        _set_handlers(old)
    if code == 0:
        print_runs(path, [run_id])
    print(run_id)
    return code


def _int_or(v):
    try:
        return int(v)
    except ValueError:
        return v


def _methods(args) -> list[str]:
    return [m.strip() for m in args.methods.split(",") if m.strip()]


def _method_options(args) -> dict:
    """--cluster-k, --merge-k, --rag-k as the spec's method options (engine.lab.checks checks them)."""
    options = {}
    if args.cluster_k is not None:
        options["cluster_k"] = args.cluster_k if args.cluster_k == "auto" else _int_or(args.cluster_k)
    if args.merge_k is not None:
        options["merge_k"] = args.merge_k
    if args.rag_k is not None:
        options["rag_k"] = args.rag_k
    return options


def _add_setup_flags(p: argparse.ArgumentParser):
    """What a run and a study are set up with alike: split file, model, methods, device, precision, metric, store,
    options, hyperparameters."""
    p.add_argument("--splits", metavar="FILE", help="a split file (the seed study's edgesplits.json: per persona, "
                   "train/val/test lists of dialogue indices) deciding each persona's splits; default: "
                   "edgesplits.json beside the data when there is one, else 60/20/20 per persona in order")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny-random, a local folder or a HF id")
    p.add_argument("--methods", default="base,unified", help=f"comma-separated, of: {', '.join(known_methods())}")
    p.add_argument("--store", default=None, help="DuckDB file (default $PLL_STORE or store.duckdb)")
    p.add_argument("--name")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when present)")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS))
    p.add_argument("--ray", metavar="ADDRESS", help=RAY_HELP)
    p.add_argument("--metric", help="the primary metric (score); default: action_f1 for smart-home dialogue data, "
                                    "embedding_similarity for other dialogue data, accuracy for choice data")
    p.add_argument("--threads", type=int, help="compute threads (default: the cores free when the run starts, "
                                               "re-checked between epochs; or $PLL_THREADS)")
    p.add_argument("--cluster-k", help="clusters for the cluster method: an integer or auto")
    p.add_argument("--merge-k", type=int, help="neighbours merged per persona (merge methods)")
    p.add_argument("--rag-k", type=int, help="own train dialogues retrieved into the prompt (rag, unified+rag; default 4)")
    _add_train_flags(p)


def cmd_import(args) -> int:
    """Per-persona results of other tools (CSV, JSON, JSONL) as an imported run; prints the run id last."""
    from engine import store
    from engine.lab import importer
    path = settings.store_path(args.store)
    try:
        store.check_location(path)
        if os.path.exists(path):  # a foreign or broken file fails here, before the files are read
            store.queries.check_usable(path)
    except store.StoreBusy:
        raise  # main: exit 3, try again later
    except store.StoreError as e:
        return _err(f"error: {e}")
    files = []
    for f in args.files:
        try:
            files.append((f, importer.read_file(f)))
        except importer.ImportProblems as e:
            return _err("\n".join(e.problems))
    try:
        plan = importer.plan_import(files, args.method, args.metric_column, args.persona_column, args.run, args.name,
                                    path)
    except importer.ImportProblems as e:
        return _err("\n".join(e.problems))
    for method, summary, _ in plan.methods:
        texts = importer.json.loads(summary["details_json"])["imported"]["text_columns"]
        if texts:
            print(f"note: {method}: column(s) {', '.join(texts)} hold no numbers; not kept", file=sys.stderr)
    run_id = importer.write_import(plan, path)
    print(f"imported {len(files)} method(s) into run {run_id}", file=sys.stderr)
    print_runs(path, [run_id])
    print(run_id)
    return 0


def cmd_runs(args) -> int:
    """Every run, as the store holds it; a `running` run whose process is gone is stored and shown as
    `interrupted` first (engine.store.queries.settle)."""
    from engine import store
    path = existing_store(args.store)
    if args.interrupt:
        try:
            print(f"run {args.interrupt}: {store.queries.mark_interrupted(args.interrupt, path)}", file=sys.stderr)
        except ValueError as e:
            return _err(f"error: {e}")
    store.queries.settle(path)
    print_runs(path)
    return 0


def cmd_ingest(args) -> int:
    """A run's result folder into the store (made when absent). A run whose process is gone lands as interrupted,
    with what it finished; a run id the store holds from another folder is refused."""
    from engine import store
    if not (Path(args.dir) / "run.json").is_file():
        return _err(f"ingest: {args.dir} is not a run's result folder (no run.json)")
    problems = []
    try:
        added = store.ingest(args.dir, args.store, problems=problems)
    except store.StoreFull as e:  # nothing was changed; the folder keeps everything
        print(f"error: {e}; free some space, then run this command again", file=sys.stderr)
        return 1
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    print(f"ingested {len(added)} method(s): {', '.join(added) or '-'}", file=sys.stderr)
    import json
    run_id = json.loads((Path(args.dir) / "run.json").read_text())["run_id"]  # read by ingest a moment ago
    row = store.queries.run_row(run_id, args.store)
    if row and row.get("status") != "done":
        why = row["error"].splitlines()[0].removeprefix(f"{row['status']}: ") if row.get("error") else ""
        print(f"run {run_id}: {row['status']}" + (f" ({why})" if why else ""), file=sys.stderr)
    store.queries.settle(args.store)
    return 0


def cmd_worker(args) -> int:
    from engine.lab.worker import worker_main
    return worker_main(args.job_id, args.jobs_dir)


def cmd_export(args) -> int:
    from engine.lab.export import cmd_export as export
    return export(args)


def _parse_vary(items) -> dict:
    """["personal_fraction=0,0.5", "r=4,16"] -> {"personal_fraction": [0, 0.5], "r": [4, 16]}."""
    from engine.lab.study import parse_values
    from engine.training.config import ConfigError
    vary = {}
    for item in items or []:
        axis, eq, values = item.partition("=")
        if not eq or not values.strip():
            raise ConfigError(f"--vary {item!r}: write AXIS=V1,V2,...")
        if axis.strip() in vary:
            raise ConfigError(f"--vary {axis.strip()}: given twice; give each axis once, with all its values "
                              f"({axis.strip()}=V1,V2,...)")
        vary[axis.strip()] = parse_values(values)
    return vary


def cmd_study(args) -> int:
    """A grid of runs (knobs or hyperparameters x seeds), the model loaded once; prints the study id last."""
    from engine import store
    from engine.data.dataset import DataError
    from engine.models.loading import ModelError
    from engine.lab.spec import parse_seeds
    from engine.lab.study import StudySpec, load_study, run_study
    from engine.training.config import ConfigError
    path = settings.store_path(args.store)
    try:
        check_run_location(path)
        if args.resume:
            spec, study_id = load_study(args.resume, path), args.resume
        else:
            spec = StudySpec(data=args.data, vary=_parse_vary(args.vary), seeds=parse_seeds(args.seeds),
                             data_seeds=parse_seeds(args.data_seeds) if args.data_seeds else None,
                             methods=_methods(args), model=args.model, name=args.name, device=args.device,
                             precision=args.precision, train=_train_overrides(args), options=_method_options(args),
                             metric=args.metric, ray=settings.ray_address(args.ray), splits=args.splits,
                             threads=args.threads)
            study_id = None
        spec.points()  # everything checked before any work
    except (ConfigError, DataError, ModelError, ValueError, store.StoreError) as e:
        return _err(str(e) if isinstance(e, DataError) else f"error: {e}")
    if study_id is None:
        from engine.lab.study import new_study_id
        study_id = new_study_id()
    progress = TqdmProgress()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
    old = _set_handlers({signal.SIGTERM: on_signal, signal.SIGHUP: on_signal})
    try:
        run_study(spec, path, study_id=study_id, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        print(f"study {study_id} cancelled; finish it with: python -m engine study --resume {study_id} --store {path}",
              file=sys.stderr)
        return 130
    finally:
        _set_handlers(old)
    progress.close()
    print(study_id)
    return 0


def cmd_compare(args) -> int:
    """The statistics Compare shows, for scripts and papers: one table of every method against the reference."""
    from engine import store
    from engine.analysis import views
    from engine.analysis.report import comparison
    path = existing_store(args.store)
    store.queries.check_usable(path)
    store.queries.settle(path)
    run_ids = [r.strip() for r in args.runs.split(",") if r.strip()]
    known = set(store.queries.runs(path).run_id)
    missing = [r for r in run_ids if r not in known]
    if not run_ids or missing:
        return _err(f"error: --runs: no run {', '.join(missing) or '(none given)'} in the store {path}")
    for name, v in (("margin", args.margin), ("effect", args.effect)):
        if v is not None and not (0 < v <= 1):
            return _err(f"error: --{name} must be in (0, 1], got {v}")
    try:
        table = views.compare_table(run_ids, reference=args.ref, metric=args.metric, path=path, kind=args.kind,
                                    margin=args.margin, effect=args.effect)
    except ValueError as e:  # a metric or kind the store does not have
        return _err(f"error: {e}")
    if args.ref not in set(table.method):
        return _err(f"error: --ref {args.ref}: not a method of {', '.join(run_ids)} (has: "
                    f"{', '.join(sorted(set(table.method)))})")
    print(comparison(table, args.format, args.effect), end="")
    return 0


def cmd_actions(args) -> int:
    """What the action metrics see: per line of stdin (a reply), one JSON list of [device, parameter, value]."""
    from engine.data.smarthome import actions_main
    for line in actions_main(sys.stdin):
        print(line, flush=True)
    return 0


def cmd_calibrate(args) -> int:
    """Which precision `auto` picks on this CPU and why (the measurement behind it, cached per machine)."""
    from engine.models.precision import cpu_calibration
    cal = cpu_calibration(refresh=args.refresh)
    print(f"cpu: {cal.cpu}  isa: {cal.isa}  threads: {cal.threads}")
    print(f"fp32 {cal.fp32_gflops:.1f} GFLOP/s  bf16 {cal.bf16_gflops:.1f} GFLOP/s  (measured in {cal.seconds:.2f} s)")
    print(f"auto -> {cal.choice}: {cal.reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from engine.data.simulator import SIMULATOR_DEFAULTS
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the smart-home persona simulator's dataset as JSONL")
    s.add_argument("--out", help="write the dialogues here (JSONL)")
    s.add_argument("--compare-to", dest="compare_to", metavar="FILE",
                   help="print the simulator's dialogue statistics beside those of real dialogues (a JSONL file or "
                        "EdgeWisePersona folder), with each statistic's range and whether the simulator is within it")
    for k, v in SIMULATOR_DEFAULTS.items():
        s.add_argument("--" + k.replace("_", "-"), dest=k, type=type(v), help=f"default {v}")
    s.set_defaults(fn=cmd_synth)

    r = sub.add_parser("run", help="train and evaluate methods on a dataset, write the store; prints the run id last")
    r.add_argument("--data", required=True, help="JSONL path, a folder of EdgeWisePersona's characters.jsonl, "
                   "routines.jsonl and sessions.jsonl, or the simulator: sim or sim:personas=8,train_per_persona=10,...")
    r.add_argument("--seed", type=int, default=0)
    _add_setup_flags(r)
    r.set_defaults(fn=cmd_run)

    im = sub.add_parser("import", help="store per-persona results of other tools (CSV, JSON, JSONL) as a run; prints "
                                       "the run id last")
    im.add_argument("files", nargs="+", metavar="FILE", help="CSV with a header, JSON (a list of per-persona objects, "
                                                             "or an object holding one such list), or JSONL")
    im.add_argument("--method", action="append", help="the method each FILE becomes: once per FILE, in order "
                                                      "(default: the file's name without its extension)")
    im.add_argument("--metric-column", help="the column that becomes the score (default: 'score' when present, "
                                            "else the first column with every value in [0, 1]; with --run: the "
                                            "run's score)")
    im.add_argument("--persona-column", default="persona_id")
    where = im.add_mutually_exclusive_group()
    where.add_argument("--run", help="add the method(s) to this imported run (same personas, same score)")
    where.add_argument("--name", help="name of the new run")
    im.add_argument("--store", default=None)
    im.set_defaults(fn=cmd_import)

    ls = sub.add_parser("runs", help="list runs with per-method mean ± std of score over personas")
    ls.add_argument("--store", default=None)
    ls.add_argument("--interrupt", metavar="RUN_ID", help="store a `running` run that no process runs any more as "
                    "interrupted, when the lab cannot tell by itself (a run of an earlier lab version, or one on "
                    "another host within an hour of its last heartbeat); refused while its process lives here")
    ls.set_defaults(fn=cmd_runs)

    ig = sub.add_parser("ingest", help="copy a run's result folder into the store")
    ig.add_argument("dir")
    ig.add_argument("--store", default=None)
    ig.set_defaults(fn=cmd_ingest)
    w = sub.add_parser("worker", help="run one dashboard job (started by the dashboard, detached)")
    w.add_argument("job_id")
    w.add_argument("--jobs-dir", default=None, help="default $PLL_JOBS or jobs/")
    w.set_defaults(fn=cmd_worker)

    ex = sub.add_parser("export", help="write a trained adapter as a PEFT adapter folder")
    ex.add_argument("--run", required=True)
    ex.add_argument("--method", required=True)
    ex.add_argument("--persona", help="persona id (per-persona, hybrid, cluster and merge methods)")
    ex.add_argument("--out", required=True, help="a new or empty folder")
    ex.add_argument("--base-out", help="also write the base weights exactly as the run used them (e.g. SmolLM2's "
                                       "Q4_1 GGUF dequantized) to this folder; the adapter's config points to it")
    ex.add_argument("--force", action="store_true", help="replace the adapter files in an existing --out folder")
    ex.add_argument("--store", default=None)
    ex.set_defaults(fn=cmd_export)

    sd = sub.add_parser("study", help="a grid of runs: simulator knobs or hyperparameters x seeds; prints the study id last")
    sd.add_argument("--data", default="sim", help="sim or sim:knob=value,... (knobs may vary), or a JSONL path or "
                    "EdgeWisePersona folder")
    sd.add_argument("--vary", action="append", help="AXIS=V1,V2,... (at most twice): a simulator knob "
                    "(personal_fraction, train_per_persona, archetypes, archetype_noise, profile_fidelity, personas) "
                    "or a hyperparameter (r, lr, epochs, ...)")
    sd.add_argument("--seeds", default="0", help="comma-separated run seeds (default 0)")
    sd.add_argument("--data-seeds", help="comma-separated simulator draws: every point is run on each (default: the "
                                         "spec's own seed); intervals then cover data as well as training seeds")
    sd.add_argument("--resume", metavar="STUDY_ID", help="finish a study cut short (its stored spec; other flags ignored)")
    _add_setup_flags(sd)
    sd.set_defaults(fn=cmd_study)

    cp = sub.add_parser("compare", help="every method of the runs against a reference: n, mean, Δ and its CI, raw and "
                                        "Holm-adjusted p, TOST p, verdict, minimum detectable effect, personas needed")
    cp.add_argument("--runs", required=True, help="run ids, comma-separated")
    cp.add_argument("--ref", default="unified", help="the reference method (default unified)")
    cp.add_argument("--metric", default="score", help="score (the run's primary metric) or any metric column")
    cp.add_argument("--kind", default="all", help="which test targets: all, personal, general, ...")
    cp.add_argument("--margin", type=float, help="equivalence margin ±δ for TOST (default 0.02)")
    cp.add_argument("--effect", type=float, help="the effect 'personas needed' is computed for (default 0.05)")
    cp.add_argument("--format", default="md", choices=["md", "csv", "json"])
    cp.add_argument("--store", default=None)
    cp.set_defaults(fn=cmd_compare)

    a = sub.add_parser("actions", help="read reply texts on stdin, one per line; print per line the [device, parameter, "
                                       "value] triples the action metrics read from it, as a JSON list")
    a.set_defaults(fn=cmd_actions)

    c = sub.add_parser("calibrate", help="time fp32 and bf16 on this CPU: what --precision auto picks, and why")
    c.add_argument("--refresh", action="store_true", help="measure again instead of reading the cached result")
    c.set_defaults(fn=cmd_calibrate)
    return p


def main(argv=None) -> int:
    from engine import store
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if getattr(args, "store", None) is not None and not args.store.strip():
        return _err("error: --store: an empty path; give a DuckDB file (or leave --store out: $PLL_STORE or "
                    f"{settings.DEFAULT_STORE})")
    try:
        return args.fn(args)
    except BrokenPipeError:  # `engine runs | head`: the reader left; say nothing more, as a SIGPIPE'd tool would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except store.StoreBusy as e:  # runs, ingest, export: nothing was changed
        print(f"error: {e}", file=sys.stderr)
        return STORE_NOT_WRITTEN
    except store.StoreFull as e:  # met while writing: nothing was changed, freeing space helps
        print(f"error: {e}; free some space, then run this command again", file=sys.stderr)
        return 1
    except (store.StoreError, store.ResultFileError) as e:  # a bad --store or result folder: nothing was changed
        return _err(f"error: {e}")
