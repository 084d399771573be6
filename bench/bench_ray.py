"""One run in one process vs the same run sharded over a local Ray cluster (ray.cluster_utils.Cluster, N nodes
x C CPUs): wall times, every shard's time and node, tokens/s per actor, and whether the per-persona scores
and greedy replies are the same. Prints numbers; asserts nothing.

    python bench/bench_ray.py --personas 32 --nodes 2 --cpus 1 --model tiny-random --methods per_persona

Start it on an idle machine: Ray's workers run at nice 15, so anything else running slows the actors first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--personas", type=int, default=32)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=1, help="CPUs per node (and per actor)")
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--methods", default="per_persona")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    import pandas as pd
    from ray.cluster_utils import Cluster

    from engine.lab.runner import execute_run
    from engine.lab.spec import RunSpec
    os.environ["PLL_RAY_CPUS_PER_ACTOR"] = str(args.cpus)
    data = f"sim:personas={args.personas},train_per_persona=8,val_per_persona=2,test_per_persona=2"
    methods = args.methods.split(",")
    train = {"epochs": args.epochs, "patience": 0}
    out = Path(tempfile.mkdtemp(prefix="bench-ray-"))

    import torch
    torch.set_num_threads(args.cpus)  # the one-process run gets what one actor gets
    t = time.time()
    execute_run(RunSpec(data=data, model=args.model, methods=methods, train=train), out / "local")
    local_wall = time.time() - t

    t = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus, "include_dashboard": False})
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=args.cpus)
    cluster.wait_for_nodes()
    up = time.time() - t
    try:
        t = time.time()
        execute_run(RunSpec(data=data, model=args.model, methods=methods, train=train, ray=cluster.address),
                    out / "ray")
        ray_wall = time.time() - t
    finally:
        import ray
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()

    print(f"{args.model}, {args.personas} personas, {methods}, {args.epochs} epochs; cluster {args.nodes} nodes x "
          f"{args.cpus} CPU (start {up:.1f} s)")
    print(f"one process ({args.cpus} thread{'s' if args.cpus > 1 else ''}): wall {local_wall:.1f} s")
    print(f"Ray: wall {ray_wall:.1f} s (actors started and the model loaded on each inside it)")
    for m in methods:
        a = json.loads((out / "local" / "methods" / m / "method.json").read_text())
        b = json.loads((out / "ray" / "methods" / m / "method.json").read_text())
        pa = pd.read_parquet(out / "local" / "methods" / m / "predictions.parquet")
        pb = pd.read_parquet(out / "ray" / "methods" / m / "predictions.parquet")
        same = pa.prediction.tolist() == pb.prediction.tolist() and pa.score.equals(pb.score)
        print(f"  {m}: local train {a['train_seconds']:.1f} s ({a['tokens_per_second']:.0f} tokens/s), eval "
              f"{a['eval_seconds']:.1f} s | Ray train {b['train_seconds']:.1f} device-s "
              f"({b['tokens_per_second']:.0f} tokens/s per actor), eval {b['eval_seconds']:.1f} s wall | "
              f"mean score {a['mean_score']:.4f} vs {b['mean_score']:.4f}; replies and scores identical: {same}")
        for s in json.loads(b["details_json"])["ray_shards"]:
            tokens = f", {s['tokens']:,} tokens of {s['adapters']} adapters" if "tokens" in s else ""
            print(f"    {s['phase']}: shard {s['shard'] + 1}/{s['of']} on node {s['node']} {s['seconds']:.1f} s{tokens}")
    print(f"(result folders under {out})")


if __name__ == "__main__":
    main()
