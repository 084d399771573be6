"""Methods that personalize through the prompt: the profile, or the persona's own retrieved dialogues."""
from __future__ import annotations

from engine.methods.adapters import unified_adapter
from engine.methods.context import MethodOutput, _output, evaluate_routed, loaded_states, save, train_groups
from engine.methods.prompting import DEFAULT_RAG_K, PROFILE_HEADER, RETRIEVED_HEADER, with_profiles, with_retrieved
from engine.training.lora import adapter_state, remove_lora


def profile_prompts(ctx):
    """examples -> the same examples with their persona's profile in the system prompt."""
    return lambda examples: with_profiles(examples, ctx.dataset.personas, ctx.cfg.system_prompt)


def retrieved_prompts(ctx):
    """examples -> the same examples with k of their persona's own most similar train dialogues in the
    system prompt (k = options["rag_k"], default 4)."""
    pools = ctx.dataset.by_persona("train")
    k = int(ctx.options.get("rag_k", DEFAULT_RAG_K))
    return lambda examples: with_retrieved(examples, pools, k, ctx.cfg.system_prompt)[0]


def prompted(ctx) -> MethodOutput:
    """The base model with the persona's profile in the system prompt; no training."""
    preds, ev = evaluate_routed(ctx, None, "prompted: evaluate", prepare=profile_prompts(ctx))
    return _output(ctx, None, preds, ev, 0)


def unified_profile(ctx) -> MethodOutput:
    """One adapter on every persona's examples, each with its persona's profile in the system prompt: one
    model that personalizes from the profile."""
    prep = profile_prompts(ctx)
    stats = train_groups(ctx, [prep(ctx.dataset.split("train"))], [prep(ctx.dataset.split("val"))],
                         ["unified+profile"], "unified+profile: train")
    try:
        save(ctx, "unified+profile", [adapter_state(ctx.lm.model, 0)], ["unified+profile"],
             {p: 0 for p in ctx.persona_ids}, prompt=f"the persona's profile after the system prompt, as "
             f"'<system prompt>, a blank line, {PROFILE_HEADER} <profile>'")
        preds, ev = evaluate_routed(ctx, None, "unified+profile: evaluate", prepare=prep)
        return _output(ctx, stats, preds, ev, 1)
    finally:
        remove_lora(ctx.lm.model)


def rag(ctx) -> MethodOutput:
    """The base model with the persona's k most similar own train dialogues in the prompt; retrieval time is
    part of eval time."""
    preds, ev = evaluate_routed(ctx, None, "rag: evaluate", prepare=retrieved_prompts(ctx))
    return _output(ctx, None, preds, ev, 0, details_extra={"rag_k": int(ctx.options.get("rag_k", DEFAULT_RAG_K))})


def unified_rag(ctx) -> MethodOutput:
    """The `unified` adapter answering with retrieved dialogues in the prompt (charged for its training)."""
    state, stats = unified_adapter(ctx, "unified+rag: train unified")
    k = int(ctx.options.get("rag_k", DEFAULT_RAG_K))
    save(ctx, "unified+rag", [state], ["unified"], {p: 0 for p in ctx.persona_ids},
         prompt=f"the persona's {k} most similar own train dialogues after the system prompt, as "
                f"'<system prompt>, a blank line, {RETRIEVED_HEADER}' and the dialogues, blank-line separated")
    with loaded_states(ctx, [state]):
        preds, ev = evaluate_routed(ctx, None, "unified+rag: evaluate", prepare=retrieved_prompts(ctx))
    return _output(ctx, stats, preds, ev, 1, stages={"unified": stats.seconds}, state=state,
                   details_extra={"rag_k": k})
