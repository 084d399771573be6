"""Persona LoRA Lab engine: data, models, batched LoRA training, evaluation, statistics, store, jobs."""
