import os
import subprocess
import sys

import numpy as np
import pytest

from engine.models.embed import EMBED_DIM, embed, embedding_similarity, load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_embed_shape_and_norm():
    e = embed(["Turn on the kitchen lights.", "Set the AC to 22 degrees.", "Hello there"])
    assert e.shape == (3, EMBED_DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert embed([]).shape == (0, EMBED_DIM)


def test_identical_texts_score_one():
    s = embedding_similarity(["Dim the bedroom lamp to 30%."], ["Dim the bedroom lamp to 30%."])
    assert s[0] == pytest.approx(1.0, abs=1e-5)


def test_paraphrase_beats_unrelated():
    ref = "Please turn the living room lights on."
    s = embedding_similarity(["Could you switch on the lights in the lounge?",
                              "The stock market closed lower on Friday."], [ref, ref])
    assert s[0] > s[1] + 0.2
    assert np.all((s >= 0) & (s <= 1))


def test_empty_prediction_scores_zero():
    s = embedding_similarity(["", "   ", "lights on"], ["lights on", "lights on", "lights on"])
    assert s[0] == 0.0 and s[1] == 0.0 and s[2] == pytest.approx(1.0, abs=1e-5)
    assert embedding_similarity([], []).shape == (0,)


def test_model_cached():
    assert load_model() is load_model("cpu")


def test_no_streamlit_import():
    code = ("import sys, engine.models.embed as e; e.embedding_similarity(['a'], ['a']); "
            "assert 'streamlit' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
