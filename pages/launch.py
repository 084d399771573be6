"""Launch: configure a run (dataset, model, methods, hyperparameters, seeds), check it, start it as jobs; or import
another tool's per-persona results as a run (engine.lab.importer does the reading and checking)."""
from dataclasses import fields

import streamlit as st

import ui
from engine import settings, store
from engine.analysis import views
from engine.analysis.estimate import estimate_seconds
from engine.data.dataset import DataError, load_dataset, repeated_targets, source_stamp
from engine.data.simulator import SIMULATOR_DEFAULTS, format_sim_spec
from engine.lab import importer, jobs, paths
from engine.lab.spec import RunSpec, parse_seeds
from engine.lab.study import SIM_KNOBS, StudySpec, parse_values, submit_study
from engine.methods import registry
from engine.models.loading import REGISTRY, ModelError
from engine.training.config import ConfigError, TrainConfig
from engine.training.evaluate import ALL_METRICS, primary_metric
from engine.training.lora import INITS

ui.page_setup()
st.title("Launch a run")


@st.cache_data(show_spinner="Checking the dataset…", max_entries=16)
def check_dataset(source: str, splits, stamp, context_window: int):
    """(summary dict, None) or (None, [problems]); stamp (the files' mtimes) invalidates edited files."""
    try:
        ds = load_dataset(source, context_window=context_window, splits=splits)
    except DataError as e:
        return None, e.problems
    except ValueError as e:  # simulator knobs
        return None, [str(e)]
    counts = {s: len(ds.split(s)) for s in ("train", "val", "test")}
    repeats, _ = repeated_targets(ds, "test")
    return {"task": ds.task, "personas": len(ds.personas), **counts, "hash": ds.hash[:12], "repeats": repeats,
            "metric": primary_metric(ds), "notes": ds.notes}, None


@st.cache_data(show_spinner=False, max_entries=16)
def validate(spec_items: tuple, stamp):
    """RunSpec.validate's verdict on the spec (what the CLI and the jobs check too), or None when it passes:
    e.g. cluster on a file without profile texts, said now and not when the run fails."""
    try:
        RunSpec(**{k: (dict(v) if k in ("train", "options") else list(v) if k == "methods" else v)
                   for k, v in spec_items}).validate()
    except DataError as e:
        return "; ".join(e.problems[:3])
    except (ConfigError, ModelError, ValueError) as e:
        return str(e)
    return None


@st.cache_data(show_spinner=False, max_entries=16)
def estimate(source, splits, stamp, model, methods, cfg_items, device, precision, store_path, store_version):
    ds = load_dataset(source, context_window=dict(cfg_items)["context_window"], splits=splits)
    cfg = TrainConfig.from_dict(dict(cfg_items))
    with ui.STORE_LOCK:
        return estimate_seconds(ds, model, methods, cfg, device, path=store_path, precision=precision)


@st.cache_data(show_spinner="Timing this CPU's matmuls in fp32 and bf16…", ttl=3600)
def cpu_precision(model):
    """What `--precision auto` picks on this CPU and why (engine.models.precision; measured once per machine)."""
    import torch

    from engine.models.precision import resolve_precision
    return resolve_precision("auto", torch.device("cpu"), model).to_dict()




# ----------------------------------------------------------------------------- dataset
st.subheader("1 · Dataset")
kind = st.radio("Source", ["Simulator", "JSONL file path", "Upload JSONL"], horizontal=True, key="data_kind")
source, splits = None, None
if kind == "Simulator":
    st.caption("The built-in smart-home persona simulator (deterministic from its seed). Knobs are the study's "
               "open questions: more examples per persona, more persona-dependent requests, clearer clusters.")
    knobs = {}
    cols = st.columns(3)
    for i, (k, v) in enumerate(SIMULATOR_DEFAULTS.items()):
        with cols[i % 3]:
            if isinstance(v, float):
                knobs[k] = st.number_input(k, min_value=0.0, max_value=1.0, value=float(v), step=0.05, key=f"sim_{k}")
            else:
                knobs[k] = int(st.number_input(k, min_value=0, value=int(v), step=1, key=f"sim_{k}"))
    try:
        source = format_sim_spec(knobs)
    except ValueError as e:
        st.error(str(e))
elif kind == "JSONL file path":
    c1, c2 = st.columns([3, 2])
    typed = c1.text_input("Path to a JSONL file, or a folder of EdgeWisePersona's three files", key="data_path",
                          placeholder="data/personas.jsonl",
                          help=f"Inside the data folder {settings.data_home()} ($PLL_HOME). A folder holds "
                               "characters.jsonl, routines.jsonl and sessions.jsonl, EdgeWisePersona's release as it "
                               "is.").strip()
    typed_splits = c2.text_input("Split file (optional)", key="data_splits", placeholder="data/edgesplits.json",
                                 help="The seed study's edgesplits.json: per persona, train/val/test lists of dialogue "
                                      "indices. Without one, an edgesplits.json beside the data decides, else 60/20/20 "
                                      "per persona in order.").strip()
    try:
        source = str(paths.confine(typed, "JSONL path")) if typed else None
        splits = str(paths.confine(typed_splits, "split file")) if typed_splits else None
    except paths.PathError as e:
        source = None
        st.error(str(e))
else:
    ups = st.file_uploader("A JSONL file, or EdgeWisePersona's three files together (characters.jsonl, "
                           "routines.jsonl, sessions.jsonl; and edgesplits.json, optionally)",
                           type=["jsonl", "json", "txt"], key="data_upload", accept_multiple_files=True)
    if ups:
        try:
            source = str(paths.save_upload(ui.jobs_dir() / "uploads", [(u.name, u) for u in ups]))  # streamed
        except paths.PathError as e:
            st.error(str(e))

# ----------------------------------------------------------------------------- model, methods
st.subheader("2 · Model and methods")
c1, c2 = st.columns(2)
other = "other (Hugging Face id or local folder)…"
choice = c1.selectbox("Base model", list(REGISTRY) + [other], key="model_choice",
                      format_func=lambda m: f"{m} — {REGISTRY[m]}" if m in REGISTRY else m)
model = c1.text_input("Model id or path", key="model_free", placeholder="Qwen/Qwen2.5-0.5B-Instruct").strip() \
    if choice == other else choice
methods = c2.multiselect("Methods", registry.known_methods(), default=["base", "unified", "per_persona"],
                         key="methods", help="\n".join(f"- `{m.name}`: {m.summary}" for m in registry.METHODS.values()))
device_opts = ["auto", "cpu"]
try:
    import torch
    device_opts += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
except ImportError:
    pass
cluster_at = settings.ray_address()
where = None
if cluster_at:
    where = st.radio("Where", ["this machine", f"Ray cluster at {cluster_at}"], key="where", horizontal=True,
                     help="PLL_RAY_ADDRESS names the cluster: actors there keep the model loaded and train and answer "
                          "the personas in shards; results come back here as from a local run")
ray_target = cluster_at if where and where != "this machine" else None
c3, c4, c5 = st.columns(3)
device = c3.selectbox("Device", device_opts, key="device", disabled=bool(ray_target),
                      help="on a Ray cluster each actor uses its GPU, else CPUs" if ray_target else None)
precision = c4.selectbox("Precision", ["auto", "fp32", "bf16"], key="precision",
                         help="auto: bf16 where this machine computes it natively (measured once), else fp32")
on_cpu = device == "cpu" or (device == "auto" and len(device_opts) == 2)
if on_cpu and model:
    chosen = cpu_precision(model)
    if precision == "auto":
        c4.caption(f"this CPU: **{chosen['precision']}** — {chosen['reason']}")
    elif precision == "bf16" and chosen["calibration"] and chosen["calibration"]["choice"] == "fp32":
        c4.warning(f"bf16 is slow here: {chosen['reason']}")
seeds_text = c5.text_input("Seed(s)", "0", key="seeds", help="Several seeds, comma-separated, start one job each.")
c6, c7 = st.columns([2, 1])
name = c6.text_input("Run name (optional)", key="run_name")
metric_choice = c7.selectbox("Primary metric (score)", ["auto"] + list(ALL_METRICS), key="metric",
                             help="auto: action_f1 for smart-home dialogue data, embedding_similarity for other "
                                  "dialogue data, accuracy for choice data")
metric = None if metric_choice == "auto" else metric_choice

# ----------------------------------------------------------------------------- hyperparameters
defaults = TrainConfig()
train = {}
with st.expander("Hyperparameters (LoRA and training)"):
    cols = st.columns(4)
    i = 0
    for f in fields(TrainConfig):
        v = getattr(defaults, f.name)
        with cols[i % 4]:
            if f.name == "targets":
                t = st.text_input("targets", ",".join(v), key="hp_targets")
                val = tuple(x.strip() for x in t.split(",") if x.strip())
            elif f.name == "system_prompt":
                continue
            elif f.name == "init":
                val = st.selectbox("init", INITS, key="hp_init",
                                   help="shared: every adapter starts from one A, as P runs of one script with one "
                                        "seed would; independent: each adapter draws its own A")
            elif isinstance(v, int) and not isinstance(v, bool):
                val = int(st.number_input(f.name, value=v, step=1, key=f"hp_{f.name}"))
            elif isinstance(v, float):
                val = float(st.number_input(f.name, value=v, format="%g", key=f"hp_{f.name}"))
            else:
                continue
        i += 1
        if val != v:
            train[f.name] = val
    sp = st.text_area("system_prompt", defaults.system_prompt, key="hp_system_prompt")
    if sp != defaults.system_prompt:
        train["system_prompt"] = sp
options = {}
read = {o for m in methods for o in registry.method(m).options}  # the options the chosen methods read
if read & {"cluster_k", "merge_k", "rag_k"}:
    with st.expander("Method options", expanded=True):
        c1, c2, c3 = st.columns(3)
        if "cluster_k" in read:
            ck = c1.text_input("cluster_k (integer or auto)", "5", key="opt_cluster_k")
            options["cluster_k"] = ck if ck.strip() == "auto" else (int(ck) if ck.strip().isdigit() else ck)
        if "merge_k" in read:
            options["merge_k"] = int(c2.number_input("merge_k (neighbours per persona)", min_value=1, value=5,
                                                     key="opt_merge_k"))
        if "rag_k" in read:
            options["rag_k"] = int(c3.number_input("rag_k (own dialogues retrieved)", min_value=1, value=4,
                                                   key="opt_rag_k"))

# ----------------------------------------------------------------------------- check + estimate
st.subheader("3 · Check and start")
problems = []
summary = None
try:
    seeds = parse_seeds(seeds_text)
except ConfigError as e:
    seeds = []
    problems.append(str(e))
try:
    cfg = TrainConfig.from_dict(train)
except (ConfigError, TypeError) as e:
    cfg = None
    problems.append(f"hyperparameters: {e}")
if not methods:
    problems.append("methods: choose at least one")
if not model:
    problems.append("model: give a model")
else:
    try:
        paths.check_model(model)
    except paths.PathError as e:
        problems.append(str(e))
if source is None:
    st.info("Choose a dataset.")
else:
    summary, data_problems = check_dataset(source, splits, source_stamp(source, splits),
                                           cfg.context_window if cfg else 4)
    if data_problems:
        st.error(f"The dataset breaks the contract ({len(data_problems)} problem(s)); nothing will start:")
        st.code("\n".join(data_problems[:50]), language=None)
        problems.append("dataset")
    elif summary:
        if not problems:  # the full check, as the job will run it (the same path as the CLI's)
            spec_items = (("data", source), ("model", model), ("methods", tuple(methods)), ("seed", seeds[0]),
                          ("device", None if device == "auto" else device), ("precision", precision),
                          ("train", tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                                                 for k, v in train.items()))),
                          ("options", tuple(sorted(options.items()))), ("metric", metric), ("ray", ray_target),
                          ("splits", splits))
            verdict = validate(spec_items, source_stamp(source, splits))
            if verdict:
                problems.append(verdict)
        st.success(f"Dataset OK: {summary['task']} task, {summary['personas']} personas, "
                   f"{summary['train']} train / {summary['val']} val / {summary['test']} test targets "
                   f"(hash {summary['hash']}); score = {metric or summary['metric']}.")
        for note in summary["notes"]:  # the split file used, what of it was ignored or left out
            st.info(note)
        if summary["repeats"]:
            st.warning(f"{summary['repeats']} of {summary['test']} test targets repeat, context and reply, a train "
                       "target of their persona: those measure memory, not generalisation.")
for p in problems:
    if p != "dataset":
        st.error(p)

if summary and cfg and methods and model and seeds:
    cfg_items = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(cfg.to_dict().items()))
    est = estimate(source, splits, source_stamp(source, splits), model, tuple(methods), cfg_items, device, precision,
                   ui.store_file(), store.version(ui.store_file()))
    st.metric("Estimated time (at most)", f"{ui.fmt_seconds(est['seconds'])} per seed"
              + (f" · {ui.fmt_seconds(est['seconds'] * len(seeds))} for {len(seeds)} seeds" if len(seeds) > 1
                 else ""))
    speed_from = {"measured": "measured on earlier runs of this model",
                  "calibrated": f"this CPU's calibrated speed in {est['precision']}; refined once a run of this "
                                "model finishes",
                  "default": "default speed; refined once a run of this model finishes"}[est["source"]]
    st.caption(f"≈ model load + {est['train_tokens']:,.0f} training tokens / {est['tokens_per_second']:,.0f} tokens/s "
               f"+ {summary['test']} test targets × {len(methods)} methods × {est['eval_s_per_target']:.2f} s "
               f"({speed_from}).")

if st.button("Start", type="primary", key="start", disabled=bool(problems) or source is None):
    started, errors = [], []
    for seed in seeds:
        spec = RunSpec(data=source, model=model, methods=list(methods), seed=seed, name=name or None,
                       device=None if device == "auto" else device, precision=precision, train=train,
                       options=options, metric=metric, ray=ray_target, splits=splits)
        try:
            started.append(jobs.submit(spec, store_file=ui.store_file(), jobs_dir=ui.jobs_dir()))
        except DataError as e:
            errors.append("The dataset breaks the contract:\n" + "\n".join(e.problems[:50]))
        except (ValueError, ModelError, OSError) as e:  # ConfigError, a simulator knob, ...: shown, nothing written
            errors.append(f"{type(e).__name__}: {e}")
        if errors:
            break
    if errors:
        for e in errors:
            st.error(e)
    if started:
        st.session_state["just_started"] = started
        st.switch_page(ui.PAGES["jobs"])

# ----------------------------------------------------------------------------- study
st.divider()
st.subheader("Or run a study: this setup over a grid")
st.caption("One or two axes (a simulator knob, or a hyperparameter on any data) × the seeds above: one run per grid "
           "point and seed, queued as jobs; the Studies page shows each method's score against the knob.")
is_sim = isinstance(source, str) and (source == "sim" or source.startswith("sim:"))
axes_avail = (list(SIM_KNOBS) if is_sim else []) + ["r", "lr", "epochs", "dropout"]
STUDY_DEFAULTS = {"personal_fraction": "0,0.25,0.5,0.75", "train_per_persona": "10,20,30", "train_spread": "0,0.5,0.9",
                  "archetypes": "2,5,8",
                  "archetype_noise": "0,0.15,0.3", "profile_fidelity": "0,0.5,1", "personas": "4,8,16",
                  "r": "4,16", "lr": "0.0003,0.001", "epochs": "1,3", "dropout": "0,0.1"}
c1, c2 = st.columns(2)
axis1 = c1.selectbox("Vary", axes_avail, key="study_axis1")
values1 = c1.text_input("its values", STUDY_DEFAULTS.get(axis1, ""), key=f"study_values_{axis1}")
axis2 = c2.selectbox("and (optional)", ["—"] + [a for a in axes_avail if a != axis1], key="study_axis2")
values2 = c2.text_input("its values", STUDY_DEFAULTS.get(axis2, ""), key=f"study_values2_{axis2}",
                        disabled=axis2 == "—")
data_seeds_text = st.text_input(
    "Data seeds (optional)", "", key="study_data_seeds", disabled=not is_sim, placeholder="e.g. 7,8,9",
    help="the simulator's data drawn anew with each seed, every point run on each draw: intervals then cover the "
         "data as well as the training seeds (a file is one fixed dataset)") if is_sim else ""
study_spec, study_problem = None, None
try:
    vary = {axis1: parse_values(values1)}
    if axis2 != "—":
        vary[axis2] = parse_values(values2)
    study_spec = StudySpec(data=source or "", vary=vary, seeds=seeds, methods=list(methods), model=model,
                           name=name or None, device=None if device == "auto" else device, precision=precision,
                           train=train, options=options, metric=metric, ray=ray_target, splits=splits,
                           data_seeds=parse_seeds(data_seeds_text) if data_seeds_text.strip() else None)
    n_points = len(study_spec.points())
    per_run = est["seconds"] if summary and cfg and methods and model and seeds else None
    st.caption(f"{n_points} runs" + (f"; at most ≈ {ui.fmt_seconds(per_run * n_points)} at the current "
                                     f"dataset's size" if per_run else ""))
except (ConfigError, ValueError) as e:
    study_problem = str(e)
    st.error(f"study: {study_problem}")
if st.button("Start study", key="start_study", disabled=bool(problems) or source is None or study_problem is not None):
    try:
        sid = submit_study(study_spec, store_file=ui.store_file(), jobs_dir=ui.jobs_dir())
        st.session_state["just_started"] = [sid]
        st.switch_page(ui.PAGES["jobs"])
    except DataError as e:
        st.error("The dataset breaks the contract:\n" + "\n".join(e.problems[:50]))
    except (ValueError, ModelError, OSError) as e:
        st.error(f"{type(e).__name__}: {e}")

# ----------------------------------------------------------------------------- import
st.divider()
st.subheader("Import results from other studies")
st.caption("Per-persona results of your own scripts: a CSV with a header, a JSON list of per-persona objects (or an "
           "object holding one such list), or JSON Lines — a persona column plus one column per metric. The file "
           "becomes one method of an imported run, with the same statistics on Compare as a trained run. Columns "
           "with every value in [0, 1] are metrics; other numeric columns are kept as details.")
import_kind = st.radio("Results file", ["Upload", "File path"], horizontal=True, key="import_kind")
results_name, results_raw = None, None
if import_kind == "Upload":
    up = st.file_uploader("Results file (CSV, JSON, JSONL)", type=["csv", "json", "jsonl"], key="import_upload")
    if up is not None and up.size > importer.MAX_FILE_BYTES:
        st.error(f"{ui.plain(up.name)}: larger than {importer.MAX_FILE_BYTES // 2**20} MB; a per-persona results file "
                 "is far smaller")
    elif up is not None:
        results_name, results_raw = up.name, up.getvalue()
else:
    typed = st.text_input("Path to a results file", key="import_path", placeholder="results/per_persona.csv",
                          help=f"Inside the data folder {settings.data_home()} ($PLL_HOME).").strip()
    if typed:
        try:
            results_path = paths.confine(typed, "results path")
            results_name, results_raw = str(results_path), importer.read_file(results_path)
        except paths.PathError as e:
            st.error(str(e))
        except importer.ImportProblems as e:  # not a regular file (a FIFO, a device), too big, unreadable
            st.error(ui.plain(e.problems[0]))
persona_column = st.text_input("Persona column", importer.PERSONA_COLUMN, key="import_persona_column").strip()


def show_import_problems(e: importer.ImportProblems):
    st.error(f"The results file cannot be imported ({len(e.problems)} problem(s)); nothing was written:")
    st.code("\n".join(e.problems), language=None)


results = None
if results_raw is not None:
    try:
        results = importer.read_results(results_name, results_raw, persona_column or importer.PERSONA_COLUMN)
    except importer.ImportProblems as e:
        show_import_problems(e)
if results is not None:
    names = lambda columns: ui.plain(", ".join(columns))  # the file's column names, shown as text
    st.success(f"{len(results.personas)} personas · metrics: {names(results.metrics)}"
               + (f" · kept as details: {names(results.others)}" if results.others else "")
               + (f" · ignored (no numbers): {names(results.texts)}" if results.texts else ""))
    all_runs = ui.read("runs")
    imported_runs = all_runs[all_runs.task == "imported"]
    c1, c2 = st.columns(2)
    into = c1.radio("Into", ["A new run", "An imported run"], horizontal=True, key="import_into",
                    disabled=imported_runs.empty, help="An imported run's methods score the same personas")
    target_run, run_name = None, None
    if into == "A new run":
        run_name = c2.text_input("Run name (optional)", key="import_run_name").strip() or None
    else:
        labels = {r["run_id"]: views.run_label(r) for _, r in imported_runs.iterrows()}
        target_run = c2.selectbox("Imported run", list(labels), format_func=labels.get, key="import_run")
    run_metric = imported_runs.set_index("run_id").metric.get(target_run) if target_run else None
    default_metric = run_metric if run_metric in results.metrics else results.score_column
    c3, c4 = st.columns(2)
    score_column = c3.selectbox("Score column (the primary metric)", results.metrics,
                                index=results.metrics.index(default_metric), key=f"import_metric_{results.sha256[:12]}")
    default_method = importer.default_method_name(results_name)
    method_name = c4.text_input("Method name", key="import_method", placeholder=default_method,
                                help="Default: the file's name without its extension").strip() or default_method
    request = (results.sha256, method_name, score_column, persona_column, target_run, run_name)
    done = st.session_state.get("import_done")
    already = bool(done and done[0] == request)  # this file, imported just so: a second click adds nothing
    if st.button("Import", key="import_button", type="primary", disabled=already) and not already:
        try:
            run_id = importer.import_results([(results_name, results_raw)], [method_name], score_column,
                                             persona_column or importer.PERSONA_COLUMN, target_run, run_name,
                                             ui.store_file())
        except importer.ImportProblems as e:
            show_import_problems(e)
        except store.StoreError as e:  # busy, or not a usable store: nothing was written
            st.error(f"{e}")
        else:
            st.session_state["import_done"] = (request, run_id)
            st.rerun()  # redrawn with the button disabled and the link to Compare
    if already:
        st.success(f"Imported as method {ui.plain(method_name)} of run {done[1]}.")
        st.page_link(ui.PAGES["compare"], label="Open in Compare", icon=":material/leaderboard:",
                     query_params={"runs": done[1]})
