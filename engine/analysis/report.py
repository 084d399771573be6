"""Runs as text for the terminal (`python -m engine runs`, and after `run` and `import`)."""
from __future__ import annotations

import textwrap

from engine.analysis.stats import DEFAULT_EFFECT, method_table, summarize
from engine.analysis.views import routing, significance_limit_text
from engine.store import queries

SPLITS = ("personal", "general", "stated", "supplied")  # the kinds printed beside the score over all targets


def _fmt(v) -> str:
    return "  —  " if v != v else f"{v:.3f}"  # NaN: undefined (one persona, or no target with the figure)


def _by_kind(rows, kind: str) -> str:
    """Mean over personas of one kind's score (personas without it skipped), with the reference settings behind
    it for stated / supplied: '0.412 (37 settings)'."""
    rows = rows[rows.kind == kind]
    text = _fmt(rows.score.mean() if len(rows) else float("nan"))
    if kind in ("stated", "supplied") and "n_settings" in rows and rows.n_settings.notna().any():
        text += f" ({int(rows.n_settings.sum())} settings)"
    return text


def _splits(rows) -> str:
    """personal and general always (— when absent), stated and supplied where the run has them (older runs do not)."""
    shown = [k for k in SPLITS if k in ("personal", "general") or (rows.kind == k).any()]
    return "  ".join(f"{k} {_by_kind(rows, k)}" for k in shown)


def print_runs(path, run_ids=None) -> None:
    """Per run and method: mean ± std over the personas that have a score, its 95% t-interval and n, the personal,
    general, stated and supplied split (supplied: the settings the assistant brings itself, where personalization
    shows), the persona-blind ceiling, time with every stage, epochs trained."""
    runs = queries.runs(path)
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    ids = list(runs.run_id)
    scores = queries.persona_scores(ids, "score", path).dropna(subset=["score"])
    kinds = queries.kind_results(ids, path)
    blind = queries.persona_blind(ids, path)
    methods = queries.method_results(ids, path)
    for _, r in runs.iterrows():
        imported = r.get("task") == "imported"  # per-persona scores only: no model, seed, kinds or times
        print(f"{r.run_id}  {r.status:9s} {'imported' if imported else r.model}  {r.dataset}  "
              f"{'' if imported else f'seed={r.seed}  '}personas={r.n_personas}  score={r.get('metric') or 'score'}")
        if r.status in ("failed", "cancelled", "interrupted") and isinstance(r.get("error"), str) and r.error:
            why = r.error.splitlines()[0]  # e.g. the process that ran it is gone
            print(f"    {r.status}: {why.removeprefix(f'{r.status}: ')}")
        for _, m in methods[methods.run_id == r.run_id].iterrows():
            s = summarize(scores[(scores.run_id == r.run_id) & (scores.method == m.method)].score.values)
            epochs = "" if m.get("epochs_trained") is None or m.epochs_trained != m.epochs_trained \
                else f"  epochs {m.epochs_trained:.1f}"
            mine = kinds[(kinds.run_id == r.run_id) & (kinds.method == m.method)] if len(kinds) else kinds
            measured = "" if imported else (
                f"  {_splits(mine)}  train {m.train_seconds:7.1f}s  eval {m.eval_seconds:6.1f}s{epochs}")
            print(f"    {m.method:19s} {_fmt(s['mean'])} ± {_fmt(s['std'])}  (95% CI {_fmt(s['ci_low'])}–"
                  f"{_fmt(s['ci_high'])}, n={s['n']}){measured}")
        _print_versus(scores[scores.run_id == r.run_id])
        routes = routing([r.run_id], path)["summary"]
        if len(routes):
            x = routes.iloc[0]
            print(f"    {'routed on test':16s} {_fmt(x.routed_on_test)}  (chosen on the test targets themselves: an "
                  f"optimistic bound, not a method; overstates routed by {x.gap:+.3f})")
        b = blind[blind.run_id == r.run_id]
        if len(b):
            print(f"    {'persona-blind ceiling':16s} {_by_kind(b, 'all')}  {_splits(b)}  "
                  "(the data's persona-blind replies, scored like a method)")

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
        print(f"      Δ {c.method:19s} {c.delta:+.3f} [{c.delta_ci_low:+.3f}, {c.delta_ci_high:+.3f}]  "
              f"p {p(c.wilcoxon_p)}  Holm p {p(c.holm_p)}  {c.verdict}")
    if limit := significance_limit_text(table):
        print(textwrap.fill(limit, 110, initial_indent="    ", subsequent_indent="    "))


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


def ceiling_lines(blind) -> list[str]:
    """`engine synth`'s report of the persona-blind ceiling: per kind of target (all, personal, general, stated,
    supplied) the mean over personas of the blind replies' action_f1, with the personas and reference settings
    behind it, and how often they refrain where the reference names no setting. blind: persona_blind_scores."""
    from engine.training.evaluate import persona_means, persona_means_by_kind
    per = persona_means_by_kind(blind, "action_f1")
    per = per.assign(kind=per.kind.astype(str))
    rows = {"all": persona_means(blind), **{k: g for k, g in per.groupby("kind")}}
    lines = []
    for kind in ("all",) + SPLITS:
        if kind in rows:
            r = rows[kind].dropna(subset=["action_f1"])
            lines.append(f"persona-blind ceiling, {kind} test targets: action_f1 {_fmt(r.action_f1.mean())} (mean over "
                         f"{len(r)} personas, {int(r.n_settings.sum())} reference settings; a perfect personalized "
                         "reply scores 1)")
    refrained = rows["all"].refrained.dropna()
    if len(refrained):
        lines.append(f"persona-blind replies name no setting where the reference names none: refrained "
                     f"{_fmt(refrained.mean())} (mean over {len(refrained)} personas, "
                     f"{int(rows['all'].n_without_settings.sum())} targets)")
    return lines
