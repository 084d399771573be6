"""Persona data: the contract and its loaders, the built-in simulator, the smart-home action vocabulary.

    contract        Example, Dataset, DataError and the checks every loader shares
    dataset         load_dataset: a JSONL file, EdgeWisePersona's folder, or a simulator spec
    edgewise        EdgeWisePersona's own release (three line-aligned files) as it is
    splitfile       the seed study's edgesplits.json (train / val / test per persona)
    simulator       the deterministic smart-home persona benchmark (knobs: the study's open questions);
                    scenes (values and situations), talk and phrasing (how its people and assistant speak)
    dialogue_stats  statistics of any dialogue data, beside a real file (`engine synth --compare-to`)
    smarthome       devices, parameters, values; parse_actions, stated vs supplied settings, action metrics

Imports only engine.settings and itself: everything else may read data.
"""
