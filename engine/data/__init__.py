"""Persona data: the JSONL contract and its loaders, the built-in smart-home simulator, the smart-home action
vocabulary and parser.

    dataset     load and validate a dataset (JSONL file, EdgeWisePersona folder or simulator spec): load_dataset
    contract    what every loader produces (Example, Dataset, DataError) and the checks the loaders share
    edgewise    EdgeWisePersona's own release (characters / routines / sessions .jsonl) as it is; meta in words
    splitfile   the seed study's edgesplits.json: per-persona train/val/test dialogue indices
    simulator   the deterministic smart-home persona benchmark (knobs: the study's open questions)
    smarthome   devices, parameters, values; parse_actions and the action metrics

Imports only engine.settings and itself: everything else may read data.
"""
