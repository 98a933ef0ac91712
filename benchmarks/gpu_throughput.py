"""GPU throughput: fine-tuning and inference cells/s, fp32 against bf16 autocast, peak GPU memory,
for the default configuration and the paper's.

Three steps, because the GPU machine holds PyTorch but none of Scanpy or AnnData:

1. here (CPU): ``python benchmarks/gpu_throughput.py prepare .gpu_data`` tokenises the bundled
   pbmc3k cells (all 2,638) once per configuration and saves the token tensors;
2. on the GPU: ``python benchmarks/gpu_throughput.py measure .gpu_data --out DIR`` imports only
   ``screformer.module`` (PyTorch and reformer-pytorch) and times, on those tokens, a fine-tuning
   step (forward, cross-entropy, backward, AdamW: what ``SCReformer.train`` runs
   per batch, without its CPU-side batching and augmentation) and an inference pass
   (``torch.no_grad``, eval mode), each at two batch sizes, in fp32 and under bf16 autocast;
3. here: ``python benchmarks/gpu_throughput.py markdown DIR/gpu_throughput.json --out
   benchmarks/results`` writes the table.

The default configuration is a new model's (``ReformerConfig()`` on the 2,000 most variable
genes, expressed genes as tokens, dim 32, depth 2); the paper's is ``ReformerConfig.paper`` on all
13,714 pbmc3k genes (every gene a token, dim 200, depth 6, absolute bins). The issue's target:
paper fine-tuning >= 840 cells/s on one device (10x the ~84 cells/s that the paper's 3 epochs over
709k cells in 7 h imply).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from screformer.module import ReformerConfig, SCReformerModule

# (configuration, batch sizes for fine-tuning, batch sizes for inference, timed steps)
PLAN = {
    "default": ((16, 256), (64, 1024), 30),
    "paper": ((4, 32), (32, 128), 10),
}
N_WARMUP = 3


def prepare(folder: Path) -> None:
    import screformer
    from screformer.data import tokenize
    from screformer.pp import prepare as prepare_values
    from screformer.pp import variable_genes

    adata = screformer.datasets.pbmc3k()
    labels = adata.obs["classified"].astype("category").cat.codes.to_numpy()
    genes = variable_genes(adata, n_top_genes=2000)
    configs = {
        "default": (ReformerConfig(n_genes=len(genes)), genes),
        "paper": (ReformerConfig.paper(adata.n_vars), list(adata.var_names)),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (config, panel) in configs.items():
        tokens = tokenize(prepare_values(adata, panel).X, config)
        arrays = {"bins": tokens["bins"].numpy().astype(np.uint8)}
        if config.token_mode == "expressed":  # "all": every cell's gene ids are the panel order
            arrays |= {
                "gene_ids": tokens["gene_ids"].numpy().astype(np.int16),
                "mask": tokens["mask"].numpy(),
            }
        # Compressed: the paper's bins are mostly zeros, and the folder travels to the GPU.
        np.savez_compressed(
            folder / f"{name}.npz", config=json.dumps(config.to_dict()), labels=labels, **arrays
        )
        print(name, {k: v.shape for k, v in arrays.items()})


def _load(path: Path) -> dict:
    with np.load(path) as f:
        tokens = {
            k: torch.from_numpy(f[k].astype(bool if k == "mask" else np.int64))
            for k in f.files
            if k != "config"
        }
        tokens["config"] = json.loads(str(f["config"]))
    return tokens


def _batches(tokens: dict, config: ReformerConfig, batch_size: int, n: int, device):
    """``n`` batches of ``batch_size`` cells drawn at random, on ``device``; padding trimmed to
    the batch's longest cell (what the training loader does)."""
    rng = np.random.default_rng(0)
    n_cells = len(tokens["labels"])
    out = []
    for _ in range(n):
        idx = torch.from_numpy(rng.choice(n_cells, batch_size, replace=batch_size > n_cells))
        if config.token_mode == "all":
            bins = tokens["bins"][idx]
            gene_ids = torch.arange(config.n_genes).expand(batch_size, -1).contiguous()
            mask = torch.ones_like(bins, dtype=torch.bool)
        else:
            mask = tokens["mask"][idx]
            width = int(mask.sum(1).max())
            bins, gene_ids, mask = (
                tokens["bins"][idx, :width],
                tokens["gene_ids"][idx, :width],
                mask[:, :width],
            )
        batch = {"gene_ids": gene_ids, "bins": bins, "mask": mask, "labels": tokens["labels"][idx]}
        out.append({k: v.to(device, non_blocking=True) for k, v in batch.items()})
    return out


def _time(fn, batches, device) -> float:
    for batch in batches[:N_WARMUP]:
        fn(batch)
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    for batch in batches[N_WARMUP:]:
        fn(batch)
    torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _measure_one(name, tokens, batch_size, mode, precision, n_steps, device) -> dict:
    config = ReformerConfig.from_dict(tokens["config"])
    n_classes = int(tokens["labels"].max()) + 1
    torch.manual_seed(0)
    module = SCReformerModule(config, n_classes=n_classes).to(device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.01)
    batches = _batches(tokens, config, batch_size, N_WARMUP + n_steps, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")

    def train_step(batch):
        with autocast:
            logits = module(batch["gene_ids"], batch["bins"], batch["mask"])
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer(batch):
        with autocast:
            module(batch["gene_ids"], batch["bins"], batch["mask"]).float().softmax(-1)

    module.train(mode == "fine-tune")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    row = {"config": name, "mode": mode, "precision": precision, "batch_size": batch_size}
    try:
        seconds = _time(train_step if mode == "fine-tune" else infer, batches, device)
    except torch.OutOfMemoryError:
        return row | {"error": "out of GPU memory"}
    tokens_per_cell = float(np.mean([b["mask"].sum().item() / batch_size for b in batches]))
    row |= {
        "steps_timed": n_steps,
        "cells_per_s": n_steps * batch_size / seconds,
        "peak_gpu_gb": torch.cuda.max_memory_allocated(device) / 1024**3,
        "tokens_per_cell": tokens_per_cell,
    }
    print(row, flush=True)
    return row


def measure(folder: Path, out: Path) -> None:
    device = torch.device("cuda")
    start = time.perf_counter()
    rows = []
    for name, (train_sizes, infer_sizes, n_steps) in PLAN.items():
        tokens = _load(folder / f"{name}.npz")
        for precision in ("fp32", "bf16"):
            for mode, sizes in (("fine-tune", train_sizes), ("inference", infer_sizes)):
                rows += [
                    _measure_one(name, tokens, size, mode, precision, n_steps, device)
                    for size in sizes
                ]
    summary = {
        "command": f"python {shlex.join(sys.argv)}",
        # Not _common.machine(): _common imports Scanpy, which the GPU machine lacks.
        "machine": {
            "gpu": torch.cuda.get_device_name(device),
            "gpus": torch.cuda.device_count(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "platform": platform.platform(),
        },
        "rows": rows,
        "wall_s": time.perf_counter() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_throughput.json").write_text(json.dumps(summary, indent=2))


def markdown(path: Path, out: Path) -> None:
    s = json.loads(path.read_text())
    lines = [
        "# GPU throughput: fine-tuning and inference",
        "",
        f"Command (on the GPU machine): `{s['command']}`  ",
        f"Machine: {s['machine']}  ",
        f"Wall time: {s['wall_s']:.0f} s.",
        "",
        "All 2,638 bundled pbmc3k cells, tokenised on the CPU beforehand "
        "(`gpu_throughput.py prepare`); batches drawn at random. Fine-tune = forward, "
        "cross-entropy, backward, AdamW per batch; inference = forward under `torch.no_grad`. "
        "Data loading, batching and augmentation on the CPU are not included. bf16 = "
        "`torch.autocast(dtype=torch.bfloat16)`, weights in fp32. Peak GPU memory: "
        "`torch.cuda.max_memory_allocated` during the timed steps.",
        "",
        "| configuration | tokens per cell | mode | precision | batch | cells/s "
        "| peak GPU memory (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        if "error" in r:
            lines.append(
                f"| {r['config']} | | {r['mode']} | {r['precision']} | {r['batch_size']} | "
                f"{r['error']} | |"
            )
            continue
        lines.append(
            f"| {r['config']} | {r['tokens_per_cell']:.0f} | {r['mode']} | {r['precision']} | "
            f"{r['batch_size']} | {r['cells_per_s']:,.0f} | {r['peak_gpu_gb']:.2f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_throughput.json").write_text(json.dumps(s, indent=2))
    (out / "gpu_throughput.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "measure", "markdown"])
    parser.add_argument("path", type=Path, help="token folder (prepare, measure) or JSON")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.path)
    elif args.step == "measure":
        measure(args.path, args.out)
    else:
        markdown(args.path, args.out)


if __name__ == "__main__":
    main()
