"""``report.html``: the evaluation as one self-contained page that opens offline.

Every plot is drawn with matplotlib (Agg, no display) and embedded as a base64 PNG ``data:`` URI; styles
are inline; no script, font or image is fetched from anywhere. Plots: the confusion matrix, precision and
coverage against the score threshold (overall and one panel per predicted label), and the reliability
diagram (accuracy against mean score per bin, with the bins' counts).
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

import numpy as np


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def matrix_plot(matrix, labels: list, title: str, cmap: str = "Blues", xlabel: str = "", ylabel: str = "") -> str:
    """A label x label count matrix as an annotated heat map (the confusion matrix; agreement's disagreements)."""
    plt = _plt()
    cm = np.array(matrix)
    size = max(4.0, 0.8 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cm, cmap=cmap)
    ax.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > max(cm.max(), 1) / 2 else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title)
    return _png(fig)


def confusion_plot(metrics: dict) -> str:
    cm = metrics["confusion_matrix"]
    return matrix_plot(cm["matrix"], cm["labels"], "Confusion matrix", "Blues", "predicted (zero-shot)", "human label")


def threshold_plot(metrics: dict) -> str:
    plt = _plt()
    curves = metrics["threshold_curves"]
    t = curves["thresholds"]
    panels = [("all labels", curves["all"])] + list(curves["by_label"].items())
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, (name, c) in zip(axes.flat, panels):
        prec = [np.nan if v is None else v for v in c["precision"]]
        cov = [np.nan if v is None else v for v in c["coverage"]]
        ax.plot(t, prec, label="precision", color="tab:blue")
        ax.plot(t, cov, label="coverage", color="tab:orange", linestyle="--")
        ax.set_title(name, fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("score threshold")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle("Precision and coverage against the score threshold (per predicted label)")
    fig.tight_layout()
    return _png(fig)


def reliability_plot(metrics: dict) -> str:
    plt = _plt()
    cal = metrics["calibration"]
    edges = np.array(cal["edges"])
    mids = (edges[:-1] + edges[1:]) / 2
    acc = np.array([np.nan if v is None else v for v in cal["accuracy"]])
    conf = np.array([np.nan if v is None else v for v in cal["confidence"]])
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.bar(mids, acc, width=edges[1] - edges[0], edgecolor="black", alpha=0.6, label="accuracy in bin")
    ax.plot(conf, acc, marker="o", color="tab:red", label="(mean score, accuracy)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"Reliability diagram (ECE {cal['ece']:.3f})")
    axc.bar(mids, cal["counts"], width=edges[1] - edges[0], color="tab:grey", edgecolor="black")
    axc.set_xlabel("top score")
    axc.set_ylabel("records")
    fig.tight_layout()
    return _png(fig)


def _ci(ci) -> str:
    return "" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def render(metrics: dict, title: str) -> str:
    e = html.escape
    per = metrics["per_label"]
    rows = "".join(
        f"<tr><td>{e(lab)}</td><td>{v['precision']:.3f}</td><td>{_ci(v['precision_ci95'])}</td>"
        f"<td>{v['recall']:.3f}</td><td>{_ci(v['recall_ci95'])}</td><td>{v['f1']:.3f}</td>"
        f"<td>{v['support']}</td><td>{v['predicted']}</td></tr>" for lab, v in per.items())
    notes = "".join(f"<li>{e(n)}</li>" for n in metrics["input"]["left_out"]) or "<li>none</li>"
    plots = [("Confusion matrix", confusion_plot(metrics)),
             ("Precision and coverage against the threshold", threshold_plot(metrics)),
             ("Reliability diagram", reliability_plot(metrics))]
    figures = "".join(f'<figure><img alt="{e(name)}" src="{src}"><figcaption>{e(name)}</figcaption></figure>'
                      for name, src in plots)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zs-ray evaluation: {e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} th {{ background: #f3f3f3; }}
.big {{ font-size: 1.4em; }} figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }} .muted {{ color: #666; }}
</style></head><body>
<h1>Zero-shot evaluation</h1>
<p class="muted">{e(title)} &middot; {e(metrics['input']['gold'])} &middot; {when}</p>
<p class="big">Accuracy <b>{metrics['accuracy']:.3f}</b> {_ci(metrics['accuracy_ci95'])} &nbsp;
Macro-F1 <b>{metrics['macro_f1']:.3f}</b> {_ci(metrics['macro_f1_ci95'])} &nbsp;
ECE <b>{metrics['calibration']['ece']:.3f}</b></p>
<p>{metrics['records']} labelled records of {metrics['input']['records']}. Intervals: {e(metrics['intervals']['proportions'])}
for accuracy, precision and recall; {e(metrics['intervals']['macro_f1'])} for macro-F1.</p>
<h2>Left out</h2><ul>{notes}</ul>
<h2>Per label</h2>
<table><tr><th>label</th><th>precision</th><th>95% CI</th><th>recall</th><th>95% CI</th><th>F1</th><th>support (human)</th><th>predicted</th></tr>{rows}</table>
<h2>Plots</h2>{figures}
</body></html>
"""


def write_report(metrics: dict, path: str, title: str = "") -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render(metrics, title))
