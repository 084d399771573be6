"""Time each dashboard page's render (streamlit AppTest) on a big store: 200 personas x 8 methods x 3 runs.

    python bench/bench_pages.py [--personas 200] [--methods 8] [--runs 3] [--repeat 3] [--out bench/out]

The store is built from synthetic but schema-valid result files, written with the engine's own writers
(store.write_run_file / write_run_table / write_method_files) and loaded with store.ingest, exactly as a
worker's results are. Each page is rendered once cold (empty caches) and `--repeat` times warm; the
target is < 2 s per page. `build_store` is also used by tests/test_app.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import store  # noqa: E402

METHODS = ["base", "unified", "per_persona", "hybrid", "cluster", "merge:ab_mean", "merge:exact", "routed"]
PAGES = ["compare", "launch", "jobs", "persona", "clusters", "studies"]


def build_store(path, n_personas=200, n_methods=8, n_runs=3, n_test=3, seed=0, work_dir=None, prefix="bench",
                extra_of=None) -> list[str]:
    """Synthetic runs ingested into `path`; returns their run ids (with clusters, UMAP, cluster_k, merge weights)."""
    rng = np.random.default_rng(seed)
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="pll-bench-"))
    methods = METHODS[:n_methods]
    pids = [f"p{i:03d}" for i in range(n_personas)]
    run_ids = []
    for r in range(n_runs):
        run_id = f"20260101-00000{r}-{prefix}{r}"
        res = work_dir / run_id
        k = 5
        cluster = rng.integers(0, k, n_personas)
        centres = rng.normal(0, 4, (k, 2))
        xy = centres[cluster] + rng.normal(0, 1, (n_personas, 2))
        store.write_run_file(res, {
            "run_id": run_id, "created_at": f"2026-01-01T00:00:{r:02d}+00:00", "finished_at": f"2026-01-01T01:00:{r:02d}+00:00",
            "name": f"bench run {r}", "status": "done", "dataset": "sim:personas=200", "dataset_hash": "x" * 64,
            "task": "dialogue", "n_personas": n_personas, "model": "smollm2-135m", "device": "cpu", "seed": r,
            "methods": ",".join(methods), "error": None, "job_id": None, "artifacts_dir": str(res),
            "config_json": json.dumps({"seed": r}), **(extra_of(r) if extra_of else {})})
        store.write_run_table(res, "personas", pd.DataFrame({
            "persona_id": pids, "profile": [f"Persona {p}: a {['nurse', 'chef', 'student'][i % 3]} who likes "
                                            f"{['warm light', 'loud music', 'cool rooms'][i % 3]}." for i, p in enumerate(pids)],
            "n_train": 30, "n_val": 10, "n_test": n_test, "cluster": cluster.astype("int32"),
            "umap_x": xy[:, 0], "umap_y": xy[:, 1], "silhouette": rng.uniform(-0.1, 0.4, n_personas)}))
        store.write_run_table(res, "cluster_k", pd.DataFrame({
            "k": list(range(2, 11)), "silhouette": rng.uniform(0, 0.1, 9), "chosen": [kk == k for kk in range(2, 11)]}))
        ability = rng.normal(0.7, 0.05, n_personas)
        for j, m in enumerate(methods):
            per = np.clip(ability + 0.02 * j - 0.05 + rng.normal(0, 0.03, n_personas), 0, 1)
            pr = pd.DataFrame({"persona_id": pids, "n_test": n_test, "score": per, "embedding_similarity": per,
                               "device_precision": rng.uniform(0, 1, n_personas),
                               "numerical_precision": rng.uniform(0, 1, n_personas),
                               "param_f1": rng.uniform(0, 1, n_personas)})
            preds = pd.DataFrame([{"persona_id": p, "example_id": f"{p}-test-{t:03d}", "kind": "personal",
                                   "context": "user: Make it cosy, as usual.",
                                   "reference": "Done: lights brightness 30, colour warm.",
                                   "prediction": f"Done: lights brightness {10 * (t + j)}, colour warm.",
                                   "score": float(np.clip(per[i] + rng.normal(0, 0.02), 0, 1)),
                                   "embedding_similarity": float(per[i])}
                                  for i, p in enumerate(pids) for t in range(n_test)])
            tables = {"persona_results": pr, "predictions": preds}
            if m.startswith("merge"):
                rows = []
                for i, p in enumerate(pids):
                    nb = [p] + list(rng.choice([q for q in pids if q != p], 4, replace=False))
                    w = rng.uniform(0.5, 1, 5)
                    rows += [{"persona_id": p, "neighbour_id": q, "weight": float(wi / w.sum()), "val_score": 0.7,
                              "centrality": 0.5, "similarity": 0.8} for q, wi in zip(nb, w)]
                tables["merge_weights"] = pd.DataFrame(rows)
            store.write_method_files(res, m, {
                "method": m, "train_seconds": 0.0 if m == "base" else float(10 * (j + 1)),
                "eval_seconds": 5.0, "peak_mem_mb": 900.0, "trainable_params": 0 if m == "base" else 10_000 * (j + 1),
                "n_adapters": 0 if m == "base" else n_personas, "device": "cpu", "n_personas": n_personas,
                "mean_score": float(per.mean()), "train_tokens": 100_000, "tokens_per_second": 500.0,
                "final_loss": 1.0, "details_json": json.dumps(_routing(methods[:j], pids, rng) if m == "routed" else {})},
                tables)
        store.ingest(res, path)
        run_ids.append(run_id)
    return run_ids


def _routing(candidates, pids, rng) -> dict:
    """details_json of a routed method: choices on validation and on test."""
    return {"candidates": candidates, "routing": {p: str(rng.choice(candidates)) for p in pids},
            "routing_on_test": {p: str(rng.choice(candidates)) for p in pids}, "test_routed_score": 0.8}


def build_studies(path, n_studies=3, n_runs=12, n_methods=8, n_personas=50, work_dir=None) -> list[str]:
    """n_studies studies of n_runs runs each (personal_fraction x 2 seeds); returns the study ids."""
    from engine.lab.study import StudySpec, save_study
    ids = []
    for k in range(n_studies):
        study_id = f"study-bench-{k}"
        values = [round(i / max(1, n_runs // 2 - 1), 3) for i in range(n_runs // 2)]
        spec = StudySpec(data="sim:personas=50", vary={"personal_fraction": values}, seeds=[0, 1],
                         methods=METHODS[:n_methods], model="smollm2-135m", name=f"bench study {k}")
        save_study(study_id, spec, "done", n_runs, path)
        build_store(path, n_personas, n_methods, n_runs, seed=100 + k, prefix=f"s{k}-", work_dir=work_dir,
                    extra_of=lambda r, k=k, values=values: {
                        "study_id": f"study-bench-{k}",
                        "coords_json": json.dumps({"personal_fraction": values[r // 2], "seed": r % 2})})
        ids.append(study_id)
    return ids


def render(page: str, store_file: str, query: dict | None = None, timeout: float = 60):
    """One render of a page through app.py (navigation + sidebar) with AppTest; returns (seconds, AppTest)."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.session_state["store_path"] = store_file
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(f"pages/{page}.py")
    t0 = time.perf_counter()
    at.run()
    return time.perf_counter() - t0, at


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--personas", type=int, default=200)
    ap.add_argument("--methods", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--studies", type=int, default=3)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pll-bench-"))
    path = str(tmp / "store.duckdb")
    os.environ["PLL_STORE"], os.environ["PLL_JOBS"] = path, str(tmp / "jobs")
    os.chdir(ROOT)
    t0 = time.perf_counter()
    run_ids = build_store(path, args.personas, args.methods, args.runs, work_dir=tmp / "results")
    study_ids = build_studies(path, args.studies, 12, args.methods, 50, work_dir=tmp / "study-results")
    print(f"store: {args.runs} runs x {args.methods} methods x {args.personas} personas, and {args.studies} studies "
          f"x 12 runs x {args.methods} methods x 50 personas, built in {time.perf_counter() - t0:.1f} s "
          f"({os.path.getsize(path) / 2**20:.1f} MiB)")
    queries = {"compare": {"runs": ",".join(run_ids)}, "persona": {"run": run_ids[0], "persona": "p007"},
               "clusters": {"run": run_ids[0]}, "studies": {"study": study_ids[0]}}
    import logging
    import streamlit as st
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    first = {}
    for page in PAGES:  # first render in this process: includes importing torch, altair, scipy, ...
        first[page], at = render(page, path, queries.get(page))
        if at.exception:
            print(f"{page}: EXCEPTION {at.exception[0].message}")
            return 1
    print(f"{'page':10s} {'first s':>8s} {'cold s':>8s} {'warm s':>8s}   (first: + module imports; "
          f"cold: empty st.cache_data; warm: cached)")
    worst = 0.0
    for page in PAGES:
        st.cache_data.clear()
        cold = render(page, path, queries.get(page))[0]
        warm = min(render(page, path, queries.get(page))[0] for _ in range(args.repeat))
        worst = max(worst, cold)
        print(f"{page:10s} {first[page]:8.2f} {cold:8.2f} {warm:8.2f}")
    print(f"slowest cold-cache render {worst:.2f} s (target < 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
