"""Runs as text for the terminal (`python -m engine runs`, and after `run` and `import`)."""
from __future__ import annotations

from engine.analysis.stats import summarize
from engine.analysis.views import routing
from engine.store import queries


def print_runs(path, run_ids=None) -> None:
    """Per run and method: mean ± std over personas of the score, its 95% t-interval, the personal and general
    split, the persona-blind ceiling, time with every stage, epochs trained."""
    runs = queries.runs(path)
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    ids = list(runs.run_id)
    scores = queries.persona_scores(ids, "score", path)
    kinds = queries.kind_results(ids, path)
    blind = queries.persona_blind(ids, path)
    methods = queries.method_results(ids, path)
    fmt = lambda v: "  —  " if v != v else f"{v:.3f}"  # NaN: undefined (one persona)
    for _, r in runs.iterrows():
        imported = r.get("task") == "imported"  # per-persona scores only: no model, seed, kinds or times
        print(f"{r.run_id}  {r.status:9s} {'imported' if imported else r.model}  {r.dataset}  "
              f"{'' if imported else f'seed={r.seed}  '}personas={r.n_personas}  score={r.get('metric') or 'score'}")
        by_kind = lambda df, m, k: df[(df.run_id == r.run_id) & (df.method == m) & (df.kind == k)].score.mean() \
            if len(df) else float("nan")
        for _, m in methods[methods.run_id == r.run_id].iterrows():
            s = summarize(scores[(scores.run_id == r.run_id) & (scores.method == m.method)].score.values)
            epochs = "" if m.get("epochs_trained") is None or m.epochs_trained != m.epochs_trained \
                else f"  epochs {m.epochs_trained:.1f}"
            measured = "" if imported else (
                f"  personal {fmt(by_kind(kinds, m.method, 'personal'))}  general "
                f"{fmt(by_kind(kinds, m.method, 'general'))}  train {m.train_seconds:7.1f}s  eval {m.eval_seconds:6.1f}s"
                f"{epochs}")
            print(f"    {m.method:16s} {fmt(s['mean'])} ± {fmt(s['std'])}  (95% CI {fmt(s['ci_low'])}–"
                  f"{fmt(s['ci_high'])}, n={s['n']}){measured}")
        routes = routing([r.run_id], path)["summary"]
        if len(routes):
            x = routes.iloc[0]
            print(f"    {'routed on test':16s} {fmt(x.routed_on_test)}  (chosen on the test targets themselves: an "
                  f"optimistic bound, not a method; overstates routed by {x.gap:+.3f})")
        b = blind[blind.run_id == r.run_id]
        if len(b):
            mean = lambda k: b[b.kind == k].score.mean() if (b.kind == k).any() else float("nan")
            print(f"    {'persona-blind ceiling':16s} {fmt(mean('all'))}  personal {fmt(mean('personal'))}  "
                  f"general {fmt(mean('general'))}  (the data's persona-blind replies, scored like a method)")
