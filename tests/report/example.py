"""Make tests/report/report.png: `zs-ray evaluate` on a synthetic pulled file shaped like a labelled MLSum-es round 1
(the six tutorial labels, 600 labelled records of 5,000; scores and errors drawn at random, so the numbers
illustrate the report, they are not SELECTRA's), then a headless-Chromium screenshot of report.html.

    python tests/report/example.py          # writes tests/report/report.png
"""

import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zs_ray.servers.pull import SCHEMA
from zs_ray.workflow.config import EvaluateConfig
from zs_ray.workflow.evaluate import evaluate

LABELS = ["política", "cultura", "sociedad", "economia", "deportes", "ciencia y tecnología"]
HERE = pathlib.Path(__file__).parent


def main() -> None:
    rng = np.random.default_rng(42)
    rows = []
    for i in range(5000):
        gold = int(rng.choice(6, p=[0.25, 0.15, 0.25, 0.15, 0.12, 0.08]))
        skill = [0.7, 0.55, 0.35, 0.6, 0.9, 0.5][gold]
        logits = rng.normal(0, 1.2, 6)
        logits[gold] += 3.2 * skill + rng.normal(0, 0.6)
        scores = np.exp(logits) / np.exp(logits).sum()
        labelled = i < 600
        rows.append({"id": f"es-test-{i:07d}", "text": "…", "inputs": [("text", "…")], "prediction_labels": LABELS,
                     "prediction_scores": scores.tolist(), "prediction_agent": "Recognai/zeroshot_selectra_medium",
                     "annotation_labels": [LABELS[gold]] if labelled else None,
                     "annotation_agent": "ana" if labelled else None,
                     "status": "Validated" if labelled else "Default", "multi_label": False,
                     "metadata": [("sample", "round-1")] if labelled else []})
    out = pathlib.Path(tempfile.mkdtemp(prefix="zs-ray-report-"))
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "annotations.parquet")
    evaluate(EvaluateConfig(input=str(out / "annotations.parquet"), output=str(out / "eval"),
                            title="zeroshot_noticias round 1 (synthetic example)"))
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1150,2950", f"--screenshot={HERE / 'report.png'}",
                    (out / "eval" / "report.html").resolve().as_uri()], check=True, capture_output=True)
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
