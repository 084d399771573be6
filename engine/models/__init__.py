"""Base models and the machine they run on.

    loading     the registry (smollm2-135m, tiny-random), load_model for any local or hub model
    precision   what `--precision auto` picks on this CPU, from a cached matmul calibration
    embed       the packaged all-MiniLM-L6-v2 sentence embeddings (profiles, retrieval, embedding similarity)
    threads     compute threads that fit the cores free now, re-checked between epochs

Imports engine.settings only.
"""
