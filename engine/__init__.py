"""Persona LoRA Lab engine: data, models, batched LoRA training, evaluation, statistics, store, jobs."""
import os

# oneDNN (torch's CPU matmuls) keeps a compiled kernel per distinct shape, up to 1024 of them; training's
# varying sequence lengths grew a run's memory by ~1.5 GB that way (smollm2-135m, 8 personas, 111 steps).
# 16 kept training and generation as fast here. Read lazily by oneDNN, so set before the first matmul.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
