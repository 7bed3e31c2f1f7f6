"""Writers of sample files: decoded text, 2-D scatter plots and image grids (PNG)."""

from __future__ import annotations

import math
import os

import numpy as np

from diffax.data.tokenizers import Tokenizer


def sample_stem(directory: str, step: int) -> str:
    """`directory/samples_{step:08d}` (the directory is created)."""
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f"samples_{step:08d}")


def write_text_samples(
    tokenizer: Tokenizer, samples: np.ndarray, directory: str, step: int
) -> tuple[str, list[str]]:
    """Decodes `samples: [N, L]` ids to text, one per line (newlines escaped), into a .txt file.

    Returns:
      (path, the N decoded lines).
    """
    lines = [tokenizer.decode(row).replace("\n", "\\n") for row in samples]
    path = sample_stem(directory, step) + ".txt"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, lines


def write_scatter(path: str, samples: np.ndarray, truth: np.ndarray) -> None:
    """Side-by-side scatter plots of model samples and true samples `[N, 2]` as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    lim = float(np.nanmax(np.abs(truth))) * 1.2
    for i, (pts, title) in enumerate(((samples, "model samples"), (truth, "data"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), title=title, aspect="equal")
    fig.tight_layout()
    fig.savefig(path)


def write_image_grid(path: str, images: np.ndarray) -> None:
    """Writes uint8 images `[N, H, W, C]` (C = 1 or 3) as one PNG grid, ceil(sqrt(N)) per row."""
    from matplotlib.image import imsave

    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + 2), cols * (w + 2), c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, q * (w + 2) + 1 : q * (w + 2) + 1 + w] = img
    if c == 1:
        imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        imsave(path, grid)
