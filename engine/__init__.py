"""Persona LoRA Lab: does personalizing a small language model per persona with LoRA beat one shared adapter?

The public API, for scripts and notebooks:

    from engine import RunSpec, execute_run, load_dataset
    execute_run(RunSpec(data="sim:personas=8", model="tiny-random", methods=["base", "unified"]), "runs/r1")

The packages, lowest first (each imports only those before it; engine.settings is read by all):

    data       the JSONL contract, the simulator, the smart-home action parser
    store      the DuckDB store: schema, connections, result files, every SQL statement
    models     base models, CPU precision, sentence embeddings
    training   batched multi-adapter LoRA: layer, trainer, merging, evaluation
    backends   where the heavy work runs: this process or a Ray cluster
    methods    the personalization methods and their registry
    analysis   statistics and the tables the dashboard shows
    lab        runs, studies, jobs, import/export, the command line

Names are imported on first use, so `import engine.store` (as the dashboard does) loads no model code.
"""
import importlib
import os

# oneDNN (torch's CPU matmuls) keeps a compiled kernel per distinct shape, up to 1024 of them; training's
# varying sequence lengths grew a run's memory by ~1.5 GB that way (smollm2-135m, 8 personas, 111 steps).
# 16 kept training and generation as fast here. Read lazily by oneDNN, so set before the first matmul.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")

_API = {
    "RunSpec": "engine.lab.spec",
    "execute_run": "engine.lab.runner",
    "StudySpec": "engine.lab.study",
    "run_study": "engine.lab.study",
    "load_dataset": "engine.data.dataset",
    "TrainConfig": "engine.training.config",
    "ConfigError": "engine.training.config",
    "DataError": "engine.data.dataset",
    "ModelError": "engine.models.loading",
    "load_model": "engine.models.loading",
    "METHODS": "engine.methods.registry",
    "known_methods": "engine.methods.registry",
}
__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
