"""Profile-embedding clusters (the `cluster` method, the Clusters page).

MiniLM embeddings of the profile texts (L2-normalised), KMeans on them, silhouettes with the cosine
distance, and a 2-D map (UMAP; PCA when there are too few personas for UMAP to mean anything).
K is an integer (capped at the number of personas) or "auto": the best silhouette over K = 2..min(10, P-1);
that sweep is stored either way (the Clusters page's silhouette-against-K chart).
The result dict is what the runner writes to the `personas` and `cluster_k` tables.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.models import embed

DEFAULT_K = 5
AUTO_K_MAX = 10
MIN_UMAP_PERSONAS = 4  # below this UMAP's neighbour graph is degenerate: use PCA


def profile_embeddings(ctx) -> np.ndarray:
    """[P, 384] unit vectors of the profile texts, in ctx.persona_ids order; computed once per run."""
    if "profile_embeddings" not in ctx.cache:
        ctx.cache["profile_embeddings"] = embed.embed([ctx.dataset.personas[p] for p in ctx.persona_ids])
    return ctx.cache["profile_embeddings"]


def _silhouette(X, labels) -> float:
    from sklearn.metrics import silhouette_score
    k = len(set(labels))
    return float(silhouette_score(X, labels, metric="cosine")) if 2 <= k <= len(X) - 1 else float("nan")


def _kmeans(X, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)


def map_2d(X: np.ndarray, seed: int) -> np.ndarray:
    """[P, 2] coordinates for the map: UMAP (cosine), or PCA for very few personas; never raises."""
    n = len(X)
    if n >= MIN_UMAP_PERSONAS:
        import torch
        threads = torch.get_num_threads()
        try:
            import warnings
            import umap  # slow import (numba): only when a map is drawn
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), metric="cosine",
                                 random_state=seed, init="spectral" if n > 10 else "random").fit_transform(X)
        except Exception:  # e.g. a degenerate neighbour graph: the PCA map below is still honest
            pass
        finally:  # numba's fit resets the OpenMP thread count, which made every later torch op slower
            torch.set_num_threads(threads)
    out = np.zeros((n, 2))
    if n >= 2:
        Xc = X - X.mean(0)
        U, S, _ = np.linalg.svd(Xc, full_matrices=False)
        m = min(2, len(S))
        out[:, :m] = U[:, :m] * S[:m]
    return out


def cluster_personas(X: np.ndarray, persona_ids: list[str], k="auto", seed: int = 0, with_map: bool = True) -> dict:
    """KMeans clusters + silhouettes (+ the 2-D map); the dict stored as ctx.cache["cluster"]."""
    from sklearn.metrics import silhouette_samples
    P = len(X)
    if k != "auto" and not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"cluster_k must be an integer >= 1 or 'auto', got {k!r}")
    # the silhouette curve over K = 2..min(10, P-1) is always computed (cheap): it shows whether the
    # profile texts have any cluster structure, whichever K is used
    sweep = list(range(2, min(AUTO_K_MAX, P - 1) + 1))
    fixed = None if k == "auto" else min(k, P)
    tried = sorted(set(sweep) | ({fixed} if fixed else set())) or [min(2, P)]  # auto with P <= 2: no choice
    labels_of, scores = {}, {}
    for kk in tried:
        labels_of[kk] = _kmeans(X, kk, seed) if kk > 1 else np.zeros(P, dtype=int)
        scores[kk] = _silhouette(X, labels_of[kk])
    chosen = fixed or max(tried, key=lambda kk: -np.inf if np.isnan(scores[kk]) else scores[kk])
    labels = labels_of[chosen]
    per = (silhouette_samples(X, labels, metric="cosine") if not np.isnan(scores[chosen])
           else np.full(P, np.nan))
    personas = pd.DataFrame({"persona_id": persona_ids, "cluster": labels.astype(int), "silhouette": per.astype(float)})
    k_scores = pd.DataFrame({"k": tried, "silhouette": [scores[kk] for kk in tried],
                             "chosen": [kk == chosen for kk in tried]})
    info = {"personas": personas, "k_scores": k_scores, "k": int(chosen), "silhouette": scores[chosen]}
    return add_map(info, X, seed) if with_map else info


def add_map(info: dict, X: np.ndarray, seed: int) -> dict:
    """umap_x / umap_y columns on info["personas"] (rows in the order of X)."""
    xy = map_2d(X, seed)
    info["personas"] = info["personas"].assign(umap_x=xy[:, 0].astype(float), umap_y=xy[:, 1].astype(float))
    return info


def ensure_clusters(ctx) -> dict | None:
    """The run's cluster map, computed once (no training): the Clusters page needs it for every run.

    Uses the cluster method's result when it ran; otherwise K = options["cluster_k"] (default 5), capped
    at P - 1 so that silhouettes exist. Returns None for runs with fewer than 3 personas or without a profile
    text for every persona.
    """
    if "cluster" not in ctx.cache:
        P = len(ctx.persona_ids)
        if P < 3 or not all(ctx.dataset.personas.values()):
            return None
        k = ctx.options.get("cluster_k", DEFAULT_K)
        ctx.cache["cluster"] = cluster_personas(profile_embeddings(ctx), ctx.persona_ids,
                                                k if k == "auto" else max(2, min(int(k), P - 1)), ctx.seed)
    return ctx.cache["cluster"]
