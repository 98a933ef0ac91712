"""Drop log noise from executed tutorials before they are committed (and shown in the docs).

Keeps what a reader needs (printed results, tables, figures, the last line of a training
progress bar) and drops stderr (library warnings, Lightning's banners, local paths) and the
progress bar's intermediate lines. To refresh the outputs:

    python -m pytest -q --nbmake --nbmake-timeout=900 --overwrite tutorials
    python tutorials/clean_outputs.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

_PROGRESS = re.compile(r"\d+/\d+ \[[^]]*(it/s|s/it)")


def _is_progress(output) -> bool:
    return output.output_type == "stream" and bool(_PROGRESS.search(output.text))


def _is_noise(output) -> bool:
    if output.output_type == "stream":
        return output.name == "stderr" or not output.text.strip()
    if output.output_type == "display_data":
        plain = output.get("data", {}).get("text/plain", "")
        return "Warning" in plain or not str(plain).strip()
    return False


def clean(path: Path) -> int:
    """Remove noisy outputs from one notebook in place; returns how many were removed."""
    notebook = nbformat.read(path, as_version=4)
    removed = 0
    for cell in notebook.cells:
        if cell.cell_type == "code":
            progress = [i for i, o in enumerate(cell.outputs) if _is_progress(o)]
            kept = [
                o
                for i, o in enumerate(cell.outputs)
                if not _is_noise(o) and (not _is_progress(o) or i == progress[-1])
            ]
            removed += len(cell.outputs) - len(kept)
            cell.outputs = kept
    nbformat.write(notebook, path)
    return removed


if __name__ == "__main__":
    folder = Path(__file__).parent
    for path in sorted(folder.glob("*.ipynb")) if len(sys.argv) < 2 else map(Path, sys.argv[1:]):
        print(f"{path.name}: {clean(path)} noisy outputs removed")
