"""Where a run's heavy work happens, behind one interface (train, evaluate, shard_seconds, close).

    local   this process (the default)
    ray     a Ray cluster's actors, each with the base model loaded, adapters trained and answered in shards

Imports engine.training and engine.models; methods hold a backend and never ask which one it is.
"""
