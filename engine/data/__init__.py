"""Persona data: the JSONL contract and its loaders, the built-in smart-home simulator, the smart-home action
vocabulary and parser.

    dataset     load and validate a dataset (JSONL file or simulator spec) into Examples and splits
    simulator   the deterministic smart-home persona benchmark (knobs: the study's open questions)
    smarthome   devices, parameters, values; parse_actions and the action metrics

Imports only engine.settings and itself: everything else may read data.
"""
