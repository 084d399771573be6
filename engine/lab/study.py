"""A study: one question asked over a grid ("when does personalization win?").

One or two axes — simulator knobs on the built-in benchmark, or hyperparameters on any data — times a list
of seeds, with one set of methods, model and hyperparameters. Every grid point is an ordinary run that
carries its study id and coordinates (knob -> value, and the seed), so every page and plain SQL see it.
The model is loaded once for the whole study. Run ids are the study id and the point's index, so a
study cut short is finished by `resume` without redoing any method that already landed in the store.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import store
from engine.store import owner
from engine.lab.runner import execute_run
from engine.lab.spec import RunSpec, check_seed_list
from engine.data.simulator import format_sim_spec, parse_sim_spec
from engine.training.config import ConfigError, TrainConfig
from engine import settings

SIM_KNOBS = ("personal_fraction", "train_per_persona", "train_spread", "archetypes", "archetype_noise", "profile_fidelity",
             "personas")
MAX_AXES = 2


@dataclass
class StudySpec:
    data: str                                     # "sim:..." (knobs may vary) or a JSONL path or EdgeWisePersona
                                                  # folder (hyperparameters may)
    vary: dict = field(default_factory=dict)      # axis -> list of values; at most two axes
    seeds: list = field(default_factory=lambda: [0])
    methods: list = field(default_factory=lambda: ["base", "unified"])
    model: str = "smollm2-135m"
    name: str | None = None
    device: str | None = None
    precision: str = "auto"
    train: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    metric: str | None = None
    ray: str | None = None                        # every run's heavy work on this Ray cluster (engine.backends.ray)
    splits: str | None = None                     # a split file for every run (RunSpec.splits)
    data_seeds: list | None = None                # simulator draws to repeat every point on (None: the spec's own)
    threads: int | None = None                    # compute threads of every run (RunSpec.threads)

    def to_dict(self) -> dict:
        return asdict(self)

    def points(self) -> list[tuple[dict, RunSpec]]:
        """Every grid point as (coordinates, run spec), checked before any work: ConfigError names what is wrong."""
        if not isinstance(self.vary, dict) or len(self.vary) > MAX_AXES:
            raise ConfigError(f"vary: at most {MAX_AXES} axes, got {list(self.vary)}")
        check_seed_list(self.seeds)
        sim = self.data.strip() == "sim" or self.data.strip().startswith("sim:")
        if self.data_seeds is not None:
            if not sim:
                raise ConfigError(f"data seeds draw the simulator's data anew; {self.data} is one fixed dataset")
            check_seed_list(self.data_seeds, "data seeds")
        hyper = set(TrainConfig.__dataclass_fields__)
        for axis, values in self.vary.items():
            if axis in ("seed", "data_seed"):
                raise ConfigError("vary: seeds are given with --seeds (training) and --data-seeds (the simulator's "
                                  "draw), not as an axis")
            if axis in SIM_KNOBS and not sim:
                raise ConfigError(f"vary {axis}: a simulator knob; {self.data} is not the simulator (vary "
                                  f"hyperparameters such as r, lr, epochs on your own data)")
            if axis not in SIM_KNOBS and axis not in hyper:
                raise ConfigError(f"vary {axis}: not a simulator knob ({', '.join(SIM_KNOBS)}) nor a "
                                  f"hyperparameter ({', '.join(sorted(hyper))})")
            if not isinstance(values, (list, tuple)) or not values or len(set(map(str, values))) != len(values):
                raise ConfigError(f"vary {axis}: give distinct values, got {values!r}")
        base_knobs = parse_sim_spec(self.data) if sim else None
        axes = list(self.vary)
        out = []
        draws = [None] if self.data_seeds is None else list(self.data_seeds)
        for combo, draw in itertools.product(itertools.product(*(self.vary[a] for a in axes)), draws):
            coords = dict(zip(axes, combo))
            label = " · ".join(f"{k}={v}" for k, v in coords.items())
            data = self.data
            if sim:
                knobs = {**base_knobs, **{k: v for k, v in coords.items() if k in SIM_KNOBS}}
                if draw is not None:
                    knobs["seed"] = draw
                    coords["data_seed"] = draw
                    label += f"{' · ' if label else ''}data {draw}"
                try:
                    data = format_sim_spec(knobs)
                except ValueError as e:
                    raise ConfigError(f"at {label}: {e}") from None
            train = {**self.train, **{k: v for k, v in coords.items() if k not in SIM_KNOBS and k != "data_seed"}}
            for seed in self.seeds:
                spec = RunSpec(data=data, model=self.model, methods=list(self.methods), seed=seed,
                               name=f"{self.name or 'study'} · {label + ' · ' if label else ''}seed {seed}",
                               device=self.device, precision=self.precision, train=train,
                               options=dict(self.options), metric=self.metric, ray=self.ray, splits=self.splits,
                               threads=self.threads)
                try:
                    spec.check()
                except ConfigError as e:
                    raise ConfigError(f"at {label or 'the grid point'}: {e}") from None
                out.append(({**coords, "seed": seed}, spec))
        return out


def parse_values(text: str) -> list:
    """"0,0.25,0.5" -> [0, 0.25, 0.5]: integers, then numbers, else the text as it is."""
    out = []
    for v in (t.strip() for t in text.split(",")):
        if not v:
            continue
        for kind in (int, float):
            try:
                out.append(kind(v))
                break
            except ValueError:
                pass
        else:
            out.append(v)
    return out


def new_study_id() -> str:
    return settings.new_id("study-", 4)


def run_id_of(study_id: str, index: int) -> str:
    return f"{study_id}-{index:03d}"


def save_study(study_id: str, spec: StudySpec, status: str, n_runs: int, path=None, runner: dict | None = None) -> None:
    store.queries.save_study(study_id, spec.name or study_id, spec.to_dict(), status, n_runs, path, runner)


def load_study(study_id: str, path=None) -> StudySpec:
    saved = store.queries.study_spec(study_id, path)
    if saved is None:
        raise ConfigError(f"no study '{study_id}' in the store {settings.store_path(path)}")
    return StudySpec(**saved)


def run_study(spec: StudySpec, path=None, study_id: str | None = None, progress=None, lm=None) -> str:
    """Every grid point not yet finished, in order; each method ingested as it lands. Returns the study id.

    With study_id of an existing study (resume), a point whose methods are all in the store is skipped and
    a point cut short runs only its missing methods (all of them when `routed` is missing: it chooses
    among the others' validation answers, which are not stored).
    """
    points = spec.points()
    study_id = study_id or new_study_id()
    save_study(study_id, spec, "running", len(points), path, runner=owner.me())  # a study whose process is gone
    status = "failed"                                                            # ends interrupted (queries.settle)
    try:
        if spec.ray:
            _run_on_ray(spec, points, study_id, path, progress)
            status = "done"
            return study_id
        for i, (coords, run_spec) in enumerate(points):
            run_id = run_id_of(study_id, i)
            done = store.queries.finished_methods(run_id, path)
            todo = [m for m in run_spec.methods if m not in done]
            if not todo:
                continue
            skip = set() if "routed" in todo else done
            if progress:
                progress(f"run {i + 1}/{len(points)}", i, len(points))
            if lm is None:
                from engine.models.loading import load_model
                lm = load_model(run_spec.model, device=run_spec.device, precision=run_spec.precision)
            results = settings.runs_dir(path) / run_id
            run_spec.study = {"study_id": study_id, "coords_json": json.dumps(coords, sort_keys=True)}
            try:
                execute_run(run_spec, results, run_id=run_id, lm=lm, skip=skip,
                            on_method_done=lambda _m: store.ingest(results, path), progress=progress)
            except BaseException:  # cancelled or failed: the run's own outcome (its run file) lands now, so the
                _land_outcome(results, path)  # store never keeps it `running` until the study is resumed
                raise
            store.ingest(results, path)
        status = "done"
    except KeyboardInterrupt:
        status = "cancelled"
        raise
    finally:
        store.queries.set_study_status(study_id, status, path)
    return study_id


def _land_outcome(results, path) -> None:
    """A stopped run's results folder into the store, best effort (a locked or full store: its process is gone
    soon, and the next command that looks stores the run as interrupted)."""
    if not (Path(results) / "run.json").exists():
        return
    try:
        store.ingest(results, path, problems=[], timeout=5.0)
    except (store.StoreError, store.ResultFileError):
        pass


def _run_on_ray(spec: StudySpec, points, study_id: str, path, progress) -> None:
    """The grid's unfinished runs placed whole on the cluster's free actors (each keeps its model loaded and runs
    one point at a time, in one process there); each run is ingested here as it lands."""
    from engine.lab.ray_runs import RunPool
    todo = []
    for i, (coords, run_spec) in enumerate(points):
        run_id = run_id_of(study_id, i)
        done = store.queries.finished_methods(run_id, path)
        left = [m for m in run_spec.methods if m not in done]
        if left:
            run_spec.study = {"study_id": study_id, "coords_json": json.dumps(coords, sort_keys=True)}
            run_spec.ray = None  # the point runs inside its actor, not sharded again
            todo.append((run_spec, str(settings.runs_dir(path) / run_id), run_id,
                         sorted(set() if "routed" in left else done)))
    with RunPool(spec.ray, spec.model, spec.precision) as pool:
        for n, (run_id, results) in enumerate(pool.run(todo), 1):
            store.ingest(results, path)
            if progress:
                progress(f"runs on the cluster ({pool.size} actors)", n, len(todo), run=run_id, node=pool.nodes[-1][:8])


def submit_study(spec: StudySpec, store_file=None, jobs_dir=None, spawn: bool = True) -> str:
    """The dashboard's way: one job per grid point (run id `<study>-<i>`), queued in grid order on the jobs'
    device queue; the study's row is written first. Everything is checked before anything is written."""
    from engine.lab import jobs
    points = spec.points()
    for _, run_spec in points[:1]:
        run_spec.validate()  # data, model, methods against the data; the other points differ only by knobs
    study_id = new_study_id()
    save_study(study_id, spec, "queued", len(points), store_file)
    for i, (coords, run_spec) in enumerate(points):
        run_spec.study = {"study_id": study_id, "coords_json": json.dumps(coords, sort_keys=True)}
        jobs.submit(run_spec, jobs_dir=jobs_dir, store_file=store_file, spawn=spawn, run_id=run_id_of(study_id, i),
                    checked=i > 0)
    return study_id


def cancel_study(study_id: str, store_file=None, jobs_dir=None) -> int:
    """Cancel every queued or running job of the study; returns how many were cancelled."""
    from engine.lab import jobs
    mine = [j for j in jobs.list_jobs(jobs_dir, store_file) if j.get("study_id") == study_id
            and j["status"] in jobs.ACTIVE]
    for j in sorted(mine, key=lambda j: j["status"] != "queued"):  # queued first: none starts while one stops
        jobs.cancel(j["job_id"], jobs_dir, store_file)
    store.queries.set_study_status(study_id, "cancelled", store_file)
    return len(mine)


def study_runs(study_id: str, path=None):
    """The study's runs with their coordinates as columns (knob values, seed)."""
    runs = store.queries.study_runs(study_id, path)
    coords = runs.coords_json.map(json.loads).apply(lambda d: d or {})
    for key in sorted({k for d in coords for k in d}):
        runs[f"at_{key}"] = coords.map(lambda d: d.get(key))
    return runs

