"""The benchmark scripts end with one JSON object for scripts (`--json`), on a model small enough for a test."""
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("script, args, keys", [
    ("bench_train.py", ["--examples", "16"], {"threads", "naive_fp32_tokens_per_s", "lab_fp32_tokens_per_s",
                                             "lab_auto_tokens_per_s", "speedup_fp32", "speedup_auto", "auto_precision"}),
    ("bench_batched.py", ["--personas", "2", "--steps", "1", "--baseline", "plain"],
     {"threads", "precision", "batched_tokens_per_s", "sequential_plain_tokens_per_s", "speedup_vs_plain"}),
])
def test_benchmarks_end_with_one_json_object(script, args, keys):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--model", "tiny-random", *args, "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert keys <= set(last), set(last)
    assert all(last[k] > 0 for k in keys if k.endswith("tokens_per_s"))
