"""Runs as text for the terminal (`python -m engine runs`, and after `run` and `import`)."""
from __future__ import annotations

from engine.analysis.stats import DEFAULT_EFFECT, method_table, summarize
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
        if r.status in ("failed", "cancelled", "interrupted") and isinstance(r.get("error"), str) and r.error:
            why = r.error.splitlines()[0]  # e.g. the process that ran it is gone
            print(f"    {r.status}: {why.removeprefix(f'{r.status}: ')}")
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
        _print_versus(scores[scores.run_id == r.run_id])
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


REFERENCE = "unified"


def _print_versus(scores, reference: str = REFERENCE) -> None:
    """Each method against the reference, paired over personas, with raw and Holm-adjusted Wilcoxon p."""
    table = method_table(scores, reference=reference)
    compared = table[table.delta.notna()]
    if compared.empty:
        return
    p = lambda v: "—" if v != v else f"{v:.3g}"
    print(f"    vs {reference}, paired over personas (significant: Holm-adjusted p < 0.05 over these "
          f"{len(compared)} comparisons):")
    for _, c in compared.iterrows():
        print(f"      {c.method:16s} Δ {c.delta:+.3f} [{c.delta_ci_low:+.3f}, {c.delta_ci_high:+.3f}]  "
              f"p {p(c.wilcoxon_p)}  Holm p {p(c.holm_p)}  {c.verdict}")


COMPARISON_COLUMNS = {  # column -> its header in the printed table
    "run_id": "run", "method": "method", "n_personas": "n", "mean": "mean", "delta": "Δ", "delta_ci_low": "Δ CI low",
    "delta_ci_high": "Δ CI high", "wilcoxon_p": "p", "holm_p": "p (Holm)", "tost_p": "TOST p", "verdict": "verdict",
    "mde": "MDE (80%)", "personas_needed": "personas needed"}


def comparison(table, fmt: str = "md", effect: float | None = None) -> str:
    """views.compare_table's figures as CSV, JSON (records) or a Markdown table: per method n, mean, Δ vs the
    reference with its 95% CI, raw and Holm-adjusted Wilcoxon p, TOST p, the verdict, the minimum detectable
    effect and the personas needed for `effect`. The reference row's comparisons are empty ("—" in Markdown)."""
    import json

    import pandas as pd
    out = table[list(COMPARISON_COLUMNS)].copy()
    if fmt == "csv":
        return out.to_csv(index=False)
    if fmt == "json":
        records = json.loads(out.to_json(orient="records", double_precision=15))  # NaN -> null
        return json.dumps(records, indent=1)
    if fmt != "md":
        raise ValueError(f"format must be csv, json or md, got {fmt!r}")
    num = lambda v, f: "—" if v is None or (isinstance(v, float) and v != v) else format(v, f)
    cells = {"n_personas": "d", "mean": ".4f", "delta": "+.4f", "delta_ci_low": "+.4f", "delta_ci_high": "+.4f",
             "wilcoxon_p": ".3g", "holm_p": ".3g", "tost_p": ".3g", "mde": ".4f", "personas_needed": ".0f"}
    rows = [[num(r[c], cells[c]) if c in cells else ("—" if pd.isna(r[c]) else str(r[c])) for c in COMPARISON_COLUMNS]
            for _, r in out.iterrows()]
    head = list(COMPARISON_COLUMNS.values())
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    note = (f"\nSignificant means Holm-adjusted p < 0.05 over the methods compared with the reference in this table; "
            f"personas needed: to detect Δ = {effect if effect is not None else DEFAULT_EFFECT} with 80% power.")
    return "\n".join(lines) + "\n" + note + "\n"
