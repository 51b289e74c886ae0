"""Figures: translation samples and segmentation overlays (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from mkdseg.labels import STRUCTURES  # noqa: E402

# background transparent, then one colour per structure in class order
LABEL_COLOURS = ListedColormap(
    [(0, 0, 0, 0), "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628"]
)


def _show(ax, image: np.ndarray, title: str, label: np.ndarray | None = None) -> None:
    ax.imshow(image, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    if label is not None:
        ax.imshow(np.ma.masked_equal(label, 0), cmap=LABEL_COLOURS, vmin=0, vmax=len(STRUCTURES), alpha=0.55, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def sample_figure(
    translation: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
    segmentation: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]],
    title: str = "",
):
    """One row per sample.

    ``translation``: ``(assistant, synthetic target, reconstruction)`` images ``[H, W]``, or ``None`` for
    methods without an alignment module. ``segmentation``: ``(target image, ground truth, {name: prediction})``.
    """
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
        _show(axes[r, c + 1], image, "ground truth", truth)
        for k, (name, pred) in enumerate(predictions.items()):
            _show(axes[r, c + 2 + k], image, name, pred)
    if title:
        fig.suptitle(title, fontsize=9)
    legend = [Patch(color=LABEL_COLOURS(i + 1), label=name) for i, name in enumerate(STRUCTURES)]
    fig.legend(handles=legend, loc="lower center", ncol=len(STRUCTURES), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
