"""``zs-ray tune``: choose the hypothesis template and the label phrasings on the records people labelled.

The input is what ``evaluate`` reads (``workflow.data``: a ``zs-ray pull`` file, or an output with a gold
column and a label map), with the records' texts. The current settings (the output's manifest, or the
config's preset, with ``--model``/``--labels``/``--hypothesis-template`` over them) are the baseline
candidate; the others are every ``--templates`` template (the current one included) with each phrasing set:
the labels themselves, each set of ``--verbalizers`` and the current preset's own, and, for a set where a
label has several phrasings, each ``--aggregate`` (``engine.verbalize``: a label's logit is the max or the
mean of its phrasings').

Every distinct (text, hypothesis) pair is scored once (``tune_score``); each candidate's prediction is its top
label, as annotate's. The candidates are ranked by macro-F1 over the labels people used (the same set for
every candidate; records whose label is not among them are refused), each with a percentile-bootstrap
interval; all candidates are scored on the same resamples (``evaluate.bootstrap_macro_f1``), so each also
gets a paired interval of its difference to the current settings. A tie ranks the current settings
first. When the paired interval of the best other candidate includes 0, the report says that no candidate
is clearly better than the current settings (the winner is still the one ranked first).

Writes ``tune.json`` (every candidate, its metrics and intervals) and the winner as a presets file
(``--output-presets``, default ``OUTPUT/presets.yaml``) that ``annotate --presets`` takes, only once every
candidate is scored.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from zs_ray.errors import ZsRayError

def verbalizer_sets(paths: list[str], labels: tuple) -> list[tuple[str, dict]]:
    """(name, label -> phrasings) of each set in the ``--verbalizers`` files, each checked against ``labels``."""
    from zs_ray.checks import load_yaml
    from zs_ray.engine.verbalize import Verbalizer

    sets = []
    for path in paths:
        data = load_yaml(path, "--verbalizers")
        if not isinstance(data, dict) or not data:
            raise ZsRayError(f"--verbalizers {path} must map labels to phrasings, or set names to such mappings")
        named = all(isinstance(v, dict) for v in data.values())
        for name, mapping in (data.items() if named else [(Path(path).stem, data)]):
            where = f"--verbalizers {path}" + (f", set {name}" if named else "")
            Verbalizer.of(labels, mapping, where=where)
            sets.append((str(name), mapping))
    return sets


def current_settings(config, data):
    """(config name, the current ``Preset``, multi-label) of the input: an output's manifest (for one of
    its configs) or the config's preset, with the flags over them."""
    from zs_ray import presets
    from zs_ray.output import open_output

    if data.kind != "output":
        name = config.config or "es"
        preset = presets.resolve([name], config.presets, config.model, config.labels, config.hypothesis_template)[name]
        return name, preset, config.multi_label
    out = open_output(config.input)
    m = out.manifest if config.config is None else out.for_config(config.config).manifest
    if m.get("model") is None or m.get("hypothesis_template") is None:
        raise ZsRayError(f"{config.input} holds the configs {', '.join(out.configs)}: choose one with --config")
    if m.get("model_kind", "nli") != "nli":
        raise ZsRayError(f"{config.input} was annotated by a supervised classifier: tune is for NLI models")
    base = presets.Preset(m["model"], m["hypothesis_template"], tuple(m["candidate_labels"]),
                          verbalizers=m.get("verbalizers"), aggregate=m.get("aggregate") or "max")
    labels = tuple(config.labels) if config.labels else base.labels
    preset = presets.Preset(config.model or base.model, config.hypothesis_template or base.hypothesis_template,
                            labels, verbalizers=presets.phrased(base.verbalizers, labels), aggregate=base.aggregate)
    return m.get("config"), preset, bool(m.get("multi_label")) or config.multi_label


def candidates(config, current) -> list:
    """The current settings first, then every template x phrasing set x aggregate (each once)."""
    from zs_ray.engine.verbalize import Verbalizer
    from zs_ray.workflow.tune_score import Candidate

    def make(template, name, mapping, aggregate):
        v = Verbalizer.of(current.labels, mapping, aggregate)
        return Candidate(template, v if not v.trivial else Verbalizer.of(current.labels, mapping), name)

    first = make(current.hypothesis_template, "current" if current.verbalizers else "labels", current.verbalizers,
                 current.aggregate)
    sets = [("labels", None)] + ([("current", current.verbalizers)] if current.verbalizers else [])
    sets += verbalizer_sets(config.verbalizers or [], current.labels)
    out = [first]
    for template in [current.hypothesis_template, *config.templates]:
        for name, mapping in sets:
            for aggregate in config.aggregate:
                c = make(template, name, mapping, aggregate)
                if all(c.template != o.template or c.verbalizer != o.verbalizer for o in out):
                    out.append(c)
    return out


def rank(gold: np.ndarray, preds: list, labels: list, bootstrap: int, seed: int) -> list[dict]:
    """Per candidate (index order): macro-F1 and accuracy, the bootstrap interval of its macro-F1 and the
    paired interval of its difference to candidate 0 (the current settings)."""
    from sklearn.metrics import accuracy_score, f1_score

    from zs_ray.workflow.evaluate import bootstrap_macro_f1, percentile_ci

    boots = bootstrap_macro_f1(gold, preds, labels, bootstrap, seed)
    rows = []
    for c, pred in enumerate(preds):
        f1 = float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
        rows.append({"macro_f1": f1, "macro_f1_ci95": percentile_ci(boots[c]),
                     "accuracy": float(accuracy_score(gold, pred)),
                     "vs_current": f1 - rows[0]["macro_f1"] if rows else 0.0,
                     "vs_current_ci95": percentile_ci(boots[c] - boots[0])})
    return rows


def verdict(rows: list, order: list) -> tuple[bool, str]:
    """(whether a candidate is clearly better than the current settings, the sentence that says so): the
    best other candidate's paired interval of its macro-F1 difference to the current settings excludes 0."""
    others = [i for i in order if not rows[i]["current"]]
    if not others:
        return False, "no other candidate: the current settings only"
    other = rows[others[0]]
    ci = other["vs_current_ci95"]
    if ci is None:
        return False, "no bootstrap (--bootstrap 0): nothing tells whether a candidate is clearly better"
    span = (f"the best other (rank {other['rank']}) differs by {other['vs_current']:+.3f}, paired 95% interval "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}]")
    if ci[0] > 0:
        return True, f"rank {other['rank']} is clearly better than the current settings: {span}"
    return False, (f"no candidate is clearly better than the current settings: {span}, which includes 0 (keep the "
                   "current settings, or label more records to tell them apart)")


def tune(config) -> dict:
    """Run ``zs-ray tune`` (``TuneConfig``): returns what it writes to tune.json."""
    from zs_ray import presets
    from zs_ray.workflow.data import load_for, require_labels
    from zs_ray.workflow.tune_score import distinct_hypotheses, score_hypotheses

    data = load_for(config, config.config if config.gold_column else None, with_text=True)
    require_labels(data)
    name, current, multi_label = current_settings(config, data)
    mask = data.has_gold & np.array([isinstance(t, str) and bool(t.strip()) for t in data.text], dtype=bool)
    gold, texts = data.gold[mask], list(data.text[mask])
    if not texts:
        raise ZsRayError(f"{config.input}: none of its {data.n_labelled} labelled records has a text to score")
    strangers = sorted(set(gold) - set(current.labels))
    if strangers:
        raise ZsRayError(f"{config.input} has labels {', '.join(strangers)} that are not candidate labels "
                         f"({', '.join(current.labels)}): give --labels")
    carried = {k: p.to_entry() for k, p in presets.load(config.presets).items()} if config.presets else {}
    cands = candidates(config, current)
    hypotheses = distinct_hypotheses(cands)
    start = time.perf_counter()
    scores = score_hypotheses(current.model, hypotheses, texts, multi_label, config.precision, config.batch_size,
                              len(texts) >= config.ray_min_records, config.num_workers, config.ray_address)
    seconds = time.perf_counter() - start
    labels = [lab for lab in current.labels if lab in set(gold)]
    preds = [np.array(current.labels, dtype=object)[scores.probabilities(c).argmax(axis=1)] for c in cands]
    rows = rank(gold, preds, labels, config.bootstrap, config.seed)
    for i, (c, row) in enumerate(zip(cands, rows)):
        row.update(id=i, current=i == 0, hypotheses=len(c.hypotheses()), **c.describe())
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["macro_f1"], i))  # a tie: the current first
    for r, i in enumerate(order, 1):
        rows[i]["rank"] = r
    best = rows[order[0]]
    clearly, message = verdict(rows, order)
    winner = presets.Preset(current.model, best["hypothesis_template"], current.labels,
                            verbalizers=best["verbalizers"], aggregate=best["aggregate"] or "max")
    result = {
        "input": {"source": str(config.input), "kind": data.kind, "records": int(len(data.ids)),
                  "labelled": int(mask.sum()), "left_out": data.notes},
        "config": name, "model": current.model, "candidate_labels": list(current.labels), "multi_label": multi_label,
        "metric": {"name": "macro-F1 over the labels people used", "labels": labels,
                   "intervals": f"percentile bootstrap, {config.bootstrap} resamples shared by every candidate "
                                f"(paired), seed {config.seed}, 95%"},
        "scoring": {"where": scores.where, "texts": len(texts), "distinct_hypotheses": len(hypotheses),
                    "pairs": len(texts) * len(hypotheses), "seconds": round(seconds, 2), "precision": config.precision},
        "candidates": [rows[i] for i in order],
        "winner": best["id"], "clearly_better": clearly, "verdict": message,
        "presets": config.output_presets or os.path.join(config.output, "presets.yaml"),
    }
    write_outputs(config, result, {**carried, (name if name is not None else presets.DEFAULT): winner.to_entry()})
    return result


def write_outputs(config, result: dict, entries: dict) -> None:
    """tune.json and the presets file (the winner under its config; ``--presets``' other configs kept), each
    written to a temporary name and renamed."""
    import yaml

    os.makedirs(config.output, exist_ok=True)
    for path, text in ((os.path.join(config.output, "tune.json"), json.dumps(result, indent=2, ensure_ascii=False)),
                       (result["presets"], yaml.safe_dump(entries, allow_unicode=True, sort_keys=False))):
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)


def table(result: dict, output: str) -> str:
    """The ranked candidates, then the verdict and what was written."""
    s = result["scoring"]
    lines = [f"tuned on {s['texts']} labelled records: {len(result['candidates'])} candidates, "
             f"{s['distinct_hypotheses']} distinct hypotheses, {s['pairs']} pairs scored {s['where']} in {s['seconds']:.1f}s",
             f"{'rank':>4}  {'macro-F1':>8}  {'95% interval':>15}  {'vs current':>10}  {'accuracy':>8}  candidate"]
    for row in result["candidates"]:
        ci = row["macro_f1_ci95"]
        what = f"{row['hypothesis_template']!r}, phrasings {row['phrasings']}"
        what += f" ({row['aggregate']})" if row["aggregate"] else ""
        lines.append(f"{row['rank']:>4}  {row['macro_f1']:8.3f}  "
                     f"{(f'[{ci[0]:.3f}, {ci[1]:.3f}]' if ci else '-'):>15}  "
                     f"{('current' if row['current'] else format(row['vs_current'], '+.3f')):>10}  "
                     f"{row['accuracy']:8.3f}  {what}")
    lines.append(f"  {result['verdict']}")
    lines.append(f"  wrote {os.path.join(output, 'tune.json')} and {result['presets']} (the winner, rank 1)")
    return "\n".join(lines)
