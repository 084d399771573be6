"""What the numbers say: statistics over personas and the tables the dashboard and the terminal show.

    stats      means, t-intervals, paired differences, over-seeds pooling (pure numpy/scipy)
    views      the pages' tables: store reads (engine.store.queries) joined with statistics
    estimate   how long a run will take, before it starts
    report     runs as text for `python -m engine runs`

Imports engine.store, engine.methods.registry and engine.models.precision; never trains.
"""
