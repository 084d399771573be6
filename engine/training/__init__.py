"""Batched multi-adapter LoRA: the layer, the trainer, merging, evaluation and the adapters on disk.

    config          TrainConfig (the one typed training config) and ConfigError
    lora            MultiLoRALinear: P adapters stacked, one pass over the frozen base layer
    encode          examples as token ids, padded and packed batches, log-probabilities of targets
    attention       block attention over packed rows (the trainer's on CPU): only the pairs that count
    trainer         train_adapters_batched: P adapters as if each were trained alone
    merge           combining adapters (ab_mean, exact, svd, ties, dare_ties)
    evaluate        batched greedy generation / choice scoring and every metric per target
    adapter_files   a method's trained adapters in the run's own format

Imports engine.models and engine.data; knows nothing of methods, runs or the store.
"""
