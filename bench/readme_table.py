"""The README's method table from a store: one row per method of a run, the statistics Compare shows.

    python bench/readme_table.py --store store.duckdb [--run RUN_ID] [--reference unified]

Columns: score over all test targets (mean ± std over personas, 95% t-interval), the personal and general
split, Δ vs the reference with its paired t-interval, Wilcoxon p, personas helped / hurt / tied, train
seconds with every stage, eval seconds, epochs trained (mean over adapters). The persona-blind ceiling
follows as a last row.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import store  # noqa: E402
from engine.analysis import views


def fmt(v, spec=".3f"):
    return "—" if v is None or v != v else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--run")
    ap.add_argument("--reference", default="unified")
    args = ap.parse_args()
    runs = store.queries.runs(args.store)
    run_id = args.run or runs.run_id.iloc[0]
    tables = {k: views.compare_table([run_id], reference=args.reference, path=args.store, kind=k).set_index("method")
              for k in views.KINDS}
    t = tables["all"].sort_values("mean", ascending=False)
    print(f"run {run_id}: {runs.set_index('run_id').loc[run_id, 'dataset']}, score = "
          f"{runs.set_index('run_id').loc[run_id, 'metric']}\n")
    print("| method | score, mean ± std | 95% CI | personal | general | supplied | Δ vs unified [95% CI] | Wilcoxon p | "
          "helped / hurt / tied | train s (all stages) | eval s | epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m, r in t.iterrows():
        ref = m == args.reference
        delta = "reference" if ref else f"{fmt(r.delta, '+.3f')} [{fmt(r.delta_ci_low, '+.3f')}, {fmt(r.delta_ci_high, '+.3f')}]"
        counts = "" if ref else f"{r.helped} / {r.hurt} / {r.tied}"
        print(f"| `{m}` | {fmt(r['mean'])} ± {fmt(r['std'])} | {fmt(r.ci_low)}–{fmt(r.ci_high)} | "
              f"{fmt(tables['personal'].loc[m, 'mean'] if m in tables['personal'].index else None)} | "
              f"{fmt(tables['general'].loc[m, 'mean'] if m in tables['general'].index else None)} | "
              f"{fmt(tables['supplied'].loc[m, 'mean'] if m in tables['supplied'].index else None)} | {delta} | "
              f"{'' if ref else fmt(r.wilcoxon_p, '.3f')} | {counts} | {fmt(r.train_seconds, '.0f')} | "
              f"{fmt(r.eval_seconds, '.0f')} | {fmt(r.epochs_trained, '.1f')} |")
    ceilings = {k: views.blind_ceiling([run_id], path=args.store, kind=k) for k in views.KINDS}
    if len(ceilings["all"]):
        c = {k: float(v.ceiling.iloc[0]) if len(v) else None for k, v in ceilings.items()}
        print(f"| persona-blind ceiling | {fmt(c['all'])} | | {fmt(c['personal'])} | {fmt(c['general'])} | "
              f"{fmt(c['supplied'])} | | | | | | |")
    routes = views.routing([run_id], path=args.store)["summary"]
    if len(routes):
        r = routes.iloc[0]
        print(f"| routed chosen on test (optimistic, not a method) | {fmt(r.routed_on_test)} | | | | | "
              f"{fmt(r.gap, '+.3f')} over `routed` | | | | | |")
    stages = tables["all"].stages
    print("\nstages: " + "; ".join(f"{m}: {s}" for m, s in stages.items() if s and m != "routed"))


if __name__ == "__main__":
    main()
