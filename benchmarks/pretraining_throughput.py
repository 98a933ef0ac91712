"""Pre-training throughput on this machine: cells per second of a masked-expression training
step (forward, backward, AdamW) for the bundled default configuration and the paper's, and of the
streaming reader alone.

Data: ../shared/data/labelled/pbmc3k_labelled.h5ad streamed from disk on the default model's
14,737-gene panel (10x pbmc3k, CC BY 4.0).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \\
        python benchmarks/pretraining_throughput.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

import screformer
from screformer.data import H5adCellStream, open_sources
from screformer.module import ReformerConfig, SCReformerModule
from screformer.train import PretrainingPlan

from _common import DATA_DIR, write_results

DATA = DATA_DIR / "labelled/pbmc3k_labelled.h5ad"


def step_rate(config: ReformerConfig, sources, batch_size: int, n_warmup: int, n_steps: int):
    """Cells per second of full pre-training steps (masking, forward, loss, backward, AdamW)."""
    torch.manual_seed(0)
    module = SCReformerModule(config, n_classes=0)
    module.train()
    plan = PretrainingPlan(module)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    stream = H5adCellStream(sources, config, batch_size=batch_size, chunk_size=256)
    batches = list(itertools.islice(iter(stream), n_warmup + n_steps))
    for i, batch in enumerate(batches):
        if i == n_warmup:
            start = time.perf_counter()
        loss, _, _ = plan._step(batch)  # the very step pre-training runs
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - start
    tokens = sum(int(b["mask"].sum()) for b in batches[n_warmup:])
    return {
        "cells_per_s": n_steps * batch_size / seconds,
        "s_per_cell": seconds / (n_steps * batch_size),
        "tokens_per_cell": tokens / (n_steps * batch_size),
        "batch_size": batch_size,
        "steps_timed": n_steps,
        "config": config.to_dict(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--paper-steps", type=int, default=3)
    args = parser.parse_args(argv)

    encoder = torch.load(screformer.pretrained.fetch("default"), weights_only=True)
    panel = encoder["gene_panel"]
    sources = open_sources([DATA], panel)
    default = ReformerConfig.from_dict(encoder["config"])
    paper = ReformerConfig.paper(len(panel))

    start = time.perf_counter()
    n_read = sum(len(b["cell"]) for b in H5adCellStream(sources, default, batch_size=16))
    read_rate = n_read / (time.perf_counter() - start)

    summary = {
        "data": DATA.name,
        "panel_genes": len(panel),
        "threads": torch.get_num_threads(),
        "stream_only_cells_per_s": read_rate,
        "default": step_rate(default, sources, 16, 2, 20),
        "paper": step_rate(paper, sources, 1, 1, args.paper_steps),
    }

    def markdown(s):
        rows = "\n".join(
            f"| {name} | {s[name]['config']['token_mode']} | {s[name]['tokens_per_cell']:.0f} | "
            f"{s[name]['config']['dim']} x {s[name]['config']['depth']} | "
            f"{s[name]['batch_size']} | {s[name]['cells_per_s']:.2f} | "
            f"{s[name]['s_per_cell']:.3f} |"
            for name in ("default", "paper")
        )
        return f"""# Pre-training throughput

Command: `{s["command"]}`; {s["machine"]["cpus"]} CPU cores, torch {s["machine"]["torch"]},
{s["threads"]} threads, tcmalloc {s["machine"]["tcmalloc"]}. Cells of {s["data"]} streamed
from disk on the default model's {s["panel_genes"]}-gene panel. One step = masking, forward,
loss, backward and AdamW.

| configuration | tokens | tokens per cell | dim x depth | batch | cells/s | s/cell |
|---|---|---|---|---|---|---|
{rows}

Streaming alone (read, normalise, align, tokenise): {s["stream_only_cells_per_s"]:.0f} cells/s.
"""

    write_results(args.out, "pretraining_throughput", summary, markdown)


if __name__ == "__main__":
    main()
