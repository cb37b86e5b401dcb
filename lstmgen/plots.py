"""Figures: the loss curve of a training run."""

from __future__ import annotations

from pathlib import Path


def plot_loss_curve(curves: dict[str, list[float]], path, title: str, reference_level: float | None = None,
                    reference_label: str = "") -> None:
    """Training loss per step of each labelled run on a log scale, and an optional reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.6))
    for label, history in curves.items():
        axis.plot(range(1, len(history) + 1), history, linewidth=1, label=label)
    if reference_level is not None:
        axis.axhline(reference_level, color="grey", linestyle="--", linewidth=1, label=reference_label)
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
