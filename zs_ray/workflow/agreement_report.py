"""``report.html`` of ``zs-ray agreement``: the team's agreement as one self-contained page, in the evaluate
report's style (``workflow.report``: inline styles, the plot embedded as a base64 PNG, nothing fetched)."""

from __future__ import annotations

import html
from datetime import datetime, timezone

from zs_ray.workflow.report import matrix_plot

STYLE = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
td:first-child, th:first-child { text-align: left; } th { background: #f3f3f3; }
.big { font-size: 1.4em; } figure { margin: 1.5em 0; } img { max-width: 100%; } .muted { color: #666; }
.flag { color: #b00020; font-weight: bold; }"""


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _ci(v: dict) -> str:
    return "" if v.get("low") is None else f"[{v['low']:.3f}, {v['high']:.3f}]"


def disagreement_plot(out: dict) -> str:
    d = out["disagreement"]
    return matrix_plot(d["matrix"], d["labels"], "Pairs of answers that disagree, by label pair", "Reds")


def render(out: dict, title: str) -> str:
    e = html.escape
    names = list(out["annotators"])
    flag = ' class="flag"'
    people = "".join(
        f"<tr><td{flag if a['flagged'] else ''}>{e(n)}</td><td>{a['records']}</td>"
        f"<td>{_f(a['agreement_with_others'])}</td><td>{_f(a.get('agreement_with_model'))}</td>"
        f"<td>{e(a['why'] or '')}</td></tr>" for n, a in out["annotators"].items())
    kappa_head = "".join(f"<th>{e(n)}</th>" for n in names)
    kappas = "".join(f"<tr><td>{e(n)}</td>" + "".join(
        f"<td>{'' if m == n else _f(out['annotators'][n]['cohen_kappa'].get(m))}</td>" for m in names) + "</tr>"
        for n in names)
    per_label = "".join(
        f"<tr><td>{e(lab)}</td><td>{_f(v['krippendorff_alpha'])}</td><td>{_f(v['fleiss_kappa'])}</td>"
        f"<td>{_f(v['observed_agreement'])}</td><td>{v['answers']}</td></tr>" for lab, v in out["per_label"].items())
    pairs = "".join(f"<li>{e(p['a'])} / {e(p['b'])}: {p['pairs']} pairs</li>" for p in out["confused_pairs"]) \
        or "<li>none</li>"
    flagged = ", ".join(e(n) for n in out["flagged"]) or "none"
    c = out["consensus"]
    review = out.get("review")
    review_line = "" if not review else (
        f"<p>Marked <b>{review['marked']}</b> records on the server for review (metadata <code>review: "
        f"disagreement</code>; {review['already']} marked before, {review['missing']} not found).</p>")
    most = "".join(f"<tr><td>{e(r['id'])}</td><td>{e(', '.join(f'{a}: {v}' for a, v in r['answers'].items()))}</td></tr>"
                   for r in out["most_disagreed"]) or "<tr><td colspan=2>none</td></tr>"
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    a, k = out["krippendorff_alpha"], out["fleiss_kappa"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>zs-ray agreement: {e(title)}</title>
<style>
{STYLE}
</style></head><body>
<h1>Annotator agreement</h1>
<p class="muted">{e(title)} &middot; {when}</p>
<p class="big">Krippendorff's alpha <b>{_f(a['value'])}</b> {_ci(a)} &nbsp; Fleiss' kappa <b>{_f(k['value'])}</b>
{_ci(k)} &nbsp; observed agreement <b>{_f(out['observed_agreement'])}</b></p>
<p>{out['responses']} answers by {len(names)} annotators on {out['records']} records, {out['overlap_records']} of them
answered by several people. Intervals: 95% percentile bootstrap over records.</p>
<p>Consensus ({e(c['method'])}): <b>{out['unresolved']}</b> records unresolved (left out by every command that
takes labels); {c['decided_by_reviewer']} decided by a reviewer ({e(', '.join(c['reviewers']) or 'none named')})).</p>
{review_line}
<h2>Annotators</h2>
<p>Far below the others: <span class="flag">{flagged}</span></p>
<table><tr><th>annotator</th><th>records</th><th>agreement with the others</th><th>agreement with the model</th>
<th></th></tr>{people}</table>
<h3>Cohen's kappa, pair by pair</h3>
<table><tr><th></th>{kappa_head}</tr>{kappas}</table>
<h2>Per label{' (yes/no)' if out.get('multi_label') else ' (this label against the others)'}</h2>
<table><tr><th>label</th><th>Krippendorff's alpha</th><th>Fleiss' kappa</th><th>observed agreement</th>
<th>answers</th></tr>{per_label}</table>
<h2>Labels people confuse</h2><ul>{pairs}</ul>
<figure><img alt="Disagreement matrix" src="{disagreement_plot(out)}"><figcaption>Disagreement matrix</figcaption></figure>
<h2>Most disagreed records</h2>
<table><tr><th>id</th><th>answers</th></tr>{most}</table>
</body></html>
"""


def write_report(out: dict, path: str, title: str = "") -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(render(out, title))
