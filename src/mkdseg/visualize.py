"""Figures: translation samples and segmentation overlays (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# one colour per structure in class order (ColorBrewer Set1, then tab20 for larger label sets)
_FIRST_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628")


def label_colours(n_structures: int) -> ListedColormap:
    """Background transparent, then ``n_structures`` distinct colours (cycling beyond 27)."""
    extra = [plt.get_cmap("tab20")(i) for i in range(20)]
    palette = (list(_FIRST_COLOURS) + extra) * (1 + n_structures // 27)
    return ListedColormap([(0, 0, 0, 0)] + palette[:n_structures])


def _show(ax, image: np.ndarray, title: str, label: np.ndarray | None = None, colours: ListedColormap | None = None) -> None:
    ax.imshow(image, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    if label is not None:
        ax.imshow(np.ma.masked_equal(label, 0), cmap=colours, vmin=0, vmax=colours.N - 1, alpha=0.55, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def sample_figure(
    translation: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
    segmentation: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    structures: Sequence[str],
    title: str = "",
):
    """One row per sample; the legend names ``structures`` (class ``i`` is ``structures[i - 1]``).

    ``translation``: ``(assistant, synthetic target, reconstruction)`` images ``[H, W]``, or ``None`` for
    methods without an alignment module. ``segmentation``: ``(target image, ground truth, {name: prediction})``.
    """
    colours = label_colours(len(structures))
    n_rows = max(len(segmentation), len(translation or []))
    n_pred = len(segmentation[0][2]) if segmentation else 0
    n_cols = (3 if translation else 0) + 2 + n_pred
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.8 * n_cols, 1.9 * n_rows), squeeze=False)
    for r in range(n_rows):
        c = 0
        if translation:
            assistant, fake, rec = translation[r % len(translation)]
            for image, name in ((assistant, "assistant"), (fake, "→ synthetic target"), (rec, "→ reconstruction")):
                _show(axes[r, c], image, name)
                c += 1
        image, truth, predictions = segmentation[r % len(segmentation)]
        _show(axes[r, c], image, "target")
        _show(axes[r, c + 1], image, "ground truth", truth, colours)
        for k, (name, pred) in enumerate(predictions.items()):
            _show(axes[r, c + 2 + k], image, name, pred, colours)
    if title:
        fig.suptitle(title, fontsize=9)
    legend = [Patch(color=colours(i + 1), label=name) for i, name in enumerate(structures)]
    fig.legend(handles=legend, loc="lower center", ncol=min(len(structures), 7), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def close_figure(fig) -> None:
    """Free a figure's memory once it is written (pyplot keeps every figure it made until closed)."""
    plt.close(fig)
