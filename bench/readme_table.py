"""The README's method table from a store: one row per method of a run, the statistics Compare shows.

    python bench/readme_table.py --store store.duckdb [--run RUN_ID] [--reference unified]
    python bench/readme_table.py --store store.duckdb --study STUDY_ID     # the Studies page's numbers

Columns: score over all test targets (mean ± std over personas, 95% t-interval), the personal and general
split, Δ vs the reference with its paired t-interval, Wilcoxon p, personas helped / hurt / tied, train
seconds with every stage, eval seconds, epochs trained (mean over adapters). The persona-blind ceiling
follows as a last row. With --study: per grid point and method, over the personas of every data draw (each
persona's score averaged over training seeds), the score on all / personal / general / stated / supplied
targets, Δ vs the reference with its paired 95% t-interval, Holm-adjusted Wilcoxon p and personas helped / hurt.
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
    ap.add_argument("--study")
    args = ap.parse_args()
    if args.study:
        return study_table(args.store, args.study, args.reference)
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


def study_table(path, study_id, reference):
    views_by_kind = {k: views.study_view(study_id, reference=reference, kind=k, path=path) for k in views.KINDS}
    axes = views_by_kind["all"]["axes"]
    print(f"study {study_id}: {views.coverage_text(views_by_kind['all']['coverage'], pooled_seeds=True)}\n")
    kinds = [k for k in views.KINDS if k != "all"]
    print(f"| {' | '.join(axes)} | method | n | all targets (95% CI) | Δ vs {reference} [95% CI] | Holm p | helped / hurt | "
          + " | ".join(f"{k} (Δ)" for k in kinds) + " |")
    print("|" + "---|" * (len(axes) + 6 + len(kinds)))
    tables = {k: v["table"].set_index(["point", "method"]) for k, v in views_by_kind.items() if len(v["table"])}
    for (point, method), r in tables["all"].sort_values("mean", ascending=False).sort_index(level=0, sort_remaining=False).iterrows():
        ref = method == reference
        cells = []
        for k in kinds:
            t = tables.get(k)
            if t is None or (point, method) not in t.index:  # no targets of that kind
                cells.append("—")
                continue
            row = t.loc[(point, method)]
            cells.append(fmt(row["mean"]) + ("" if ref else f" ({fmt(row.delta, '+.3f')})"))
        delta = "reference" if ref else f"{fmt(r.delta, '+.3f')} [{fmt(r.delta_ci_low, '+.3f')}, {fmt(r.delta_ci_high, '+.3f')}]"
        print(f"| {' | '.join(str(r[a]) for a in axes)} | `{method}` | {r.n_personas} | {fmt(r['mean'])} "
              f"({fmt(r.ci_low)}–{fmt(r.ci_high)}) | {delta} | {'' if ref else fmt(r.holm_p, '.3g')} | "
              f"{'' if ref else f'{r.helped} / {r.hurt}'} | " + " | ".join(cells) + " |")
    ceiling = {k: v["ceiling"] for k, v in views_by_kind.items()}
    for point in tables["all"].index.get_level_values(0).unique():
        values = {k: (c.set_index("point").ceiling.get(point) if len(c) else None) for k, c in ceiling.items()}
        print(f"persona-blind ceiling at {point}: " + ", ".join(f"{k} {fmt(v)}" for k, v in values.items()))


if __name__ == "__main__":
    main()
