"""The personalization methods and the one registry that declares them.

    registry    every method once: what it needs, what it trains and reuses, what it exports
    context     Context (what a method sees), MethodOutput, and the steps methods share
    adapters    base, unified, per_persona, hybrid, cluster
    baselines   nearest_reply and its persona-blind control: copy the most similar train reply
    prompts     prompted, unified+profile, rag, unified+rag
    merging     merge:<combination>
    routing     routed
    cluster     profile embeddings, KMeans, silhouettes, the 2-D map
    prompting   profile and retrieved-dialogue prompts

Imports engine.backends, engine.training, engine.models, engine.data and engine.store's result-file names.
"""
