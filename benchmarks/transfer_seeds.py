"""Run to run: the same transfer tasks trained with different seeds, side by side.

Reads ``transfer.py`` results JSONs, each as ``PATH:VARIANT`` (the variant's column in that
run), groups them by variant, and writes ``results/transfer_seeds.{json,md}``: per stage and
variant the mean macro F1 of each seed's run, and per task each seed's score, with logistic
regression (deterministic) beside them. Only stages with every task present count. E.g.

    python benchmarks/transfer_seeds.py \\
        benchmarks/results/transfer.json:relative+headbins+augment \\
        benchmarks/results/transfer_seed1.json:relative+augment ...

``--add-to benchmarks/results/transfer_seeds.json`` adds runs to the table without the earlier
runs' JSONs (some were written to scratch folders); the earlier LR scores stay.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from _common import mean_sd, write_results

TASKS = {"pancreas": 9, "pbmc": 11, "processed": 12, "cv": 5}
LR = "logistic_regression"


def collect(sources: list[str], into: dict | None = None) -> dict:
    """{stage: {variant: [{"command", "seed", "scores": {task: macro F1}}]}} and LR's scores;
    ``into`` (an earlier result of this function): its runs first, and its LR scores kept."""
    runs, lr = defaultdict(lambda: defaultdict(list)), defaultdict(dict)
    for stage, variants in (into or {}).get("runs", {}).items():
        for variant, earlier in variants.items():
            runs[stage][variant].extend(earlier)
    for source in sources:
        path, variant = source.split(":", 1)
        summary = json.loads(Path(path).read_text())
        seed = summary["variants"][variant]["train"].get("seed", 0)
        for stage, rows in summary["results"].items():
            if stage not in TASKS or len(rows) != TASKS[stage]:
                continue
            scores = {r["task"]: r[variant]["macro_f1"] for r in rows}
            # A stage rerun into this file (transfer.py --merge) has its own command.
            reruns = [r["command"] for r in summary.get("rerun", []) if stage in r["stages"]]
            command = reruns[-1] if reruns else summary["command"]
            runs[stage][variant].append({"command": command, "seed": seed, "scores": scores})
            lr[stage].update({r["task"]: r[LR]["macro_f1"] for r in rows})
    for stage, scores in (into or {}).get("logistic_regression", {}).items():
        lr[stage].update(scores)
    return {"runs": runs, "logistic_regression": lr}


def markdown(s: dict) -> str:
    lines = [
        "# Transfer: run to run (training seeds)",
        "",
        "Macro F1 over the types present in the scored cells' truth; each seed a separate "
        "training of the same variant on the same cells (`transfer.py --model-seed`). Logistic "
        "regression is deterministic: one value. The pancreas runs collected up to 2026-12-05 "
        "read transfer.py's old pancreas input (log2 values read a second time; "
        "`docs/transfer.md`, section 3); the default's runs on the corrected input are "
        "`transfer_pancreas_cap.md` and `transfer_pancreas_cap_seed1.md`.",
        "",
        "| stage | variant | seeds | mean F1 per seed | mean ± sd over seeds | LR |",
        "|---|---|---|---|---|---|",
    ]
    for stage, variants in s["runs"].items():
        lr = np.mean(list(s["logistic_regression"][stage].values()))
        for variant, runs in variants.items():
            means = [np.mean(list(r["scores"].values())) for r in runs]
            seeds = ", ".join(str(r["seed"]) for r in runs)
            per_seed = " / ".join(f"{m:.3f}" for m in means)
            lines.append(
                f"| {stage} | `{variant}` | {seeds} | {per_seed} | {mean_sd(means)} | {lr:.3f} |"
            )
    for stage, variants in s["runs"].items():
        lines += ["", f"## {stage}: each task, each seed", ""]
        names = list(variants)
        lines += ["| task | " + " | ".join(f"`{v}`" for v in names) + " | LR |"]
        lines += ["|---" * (len(names) + 2) + "|"]
        for task, lr in s["logistic_regression"][stage].items():
            cells = [" / ".join(f"{r['scores'][task]:.3f}" for r in variants[v]) for v in names]
            lines.append(f"| {task} | " + " | ".join(cells) + f" | {lr:.3f} |")
    lines += ["", "## Runs", ""]
    for stage, variants in s["runs"].items():
        for variant, runs in variants.items():
            lines += [f"- {stage}, `{variant}`, seed {r['seed']}: `{r['command']}`" for r in runs]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="PATH:VARIANT of transfer.py results JSONs")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--add-to", help="a transfer_seeds JSON: keep its runs (and its LR) and add the sources'"
    )
    args = parser.parse_args(argv)
    into = json.loads(Path(args.add_to).read_text()) if args.add_to else None
    write_results(args.out, "transfer_seeds", collect(args.sources, into), markdown)


if __name__ == "__main__":
    main()
