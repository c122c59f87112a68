"""report.html of `alpo eval`: one self-contained page with the tables and plots.

The page is rendered from what an output folder holds: `scores.json` (`alpo eval`) and
`agreement.json` (`alpo eval agreement`), either or both. Sections: the systems and judges;
mean scores per direction with confidence intervals (over all judges, and per judge); a bar
chart per dimension with the intervals as error bars; score distributions per system;
pairwise win/tie/loss; judge failures; agreement with human scores (scatter and Bland-Altman
plots); and the windows where the systems' scores differ most. Plots are PNG images drawn with
matplotlib (no display needed) and embedded as base64 data, so the file can be mailed or
archived alone.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import Any

from alpo.evaluate import DIMENSIONS, REFERENCE

__all__ = ["render_report", "write_report"]

#: colours of the systems, in order; the human reference is always grey
PALETTE = [
    "#4C72B0",
    "#DD8452",
    "#55A868",
    "#C44E52",
    "#8172B3",
    "#937860",
    "#DA8BC3",
    "#CCB974",
    "#64B5CD",
]
REFERENCE_COLOUR = "#8C8C8C"


def write_report(out: Path) -> Path:
    """Render `out/report.html` from the results in `out`; returns its path."""
    out = Path(out)
    scores = _load(out / "scores.json")
    agreement = _load(out / "agreement.json")
    html = render_report(scores, agreement)
    path = out / "report.html"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def render_report(scores: dict[str, Any] | None, agreement: dict[str, Any] | None) -> str:
    """The HTML page for an eval summary and/or an agreement summary."""
    import jinja2

    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    context: dict[str, Any] = {"scores": scores, "agreement": agreement, "dimensions": DIMENSIONS}
    if scores is not None:
        systems = list(scores["systems"])
        colours = _colours(systems)
        context["colours"] = colours
        context["bars"] = {d: _bar_chart(scores, d, colours) for d in DIMENSIONS}
        context["distributions"] = {
            p: _distribution_chart(scores, p, colours) for p in scores["directions"]
        }
        context["judge_names"] = list(scores["judges"])
    if agreement is not None:
        context["agreement_plots"] = {
            j: _agreement_chart(agreement, j) for j in agreement["judges"]
        }
    return env.from_string(TEMPLATE).render(**context)


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    return f"{float(v):.{digits}f}"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def _colours(systems: list[str]) -> dict[str, str]:
    out, k = {}, 0
    for s in systems:
        if s == REFERENCE:
            out[s] = REFERENCE_COLOUR
        else:
            out[s] = PALETTE[k % len(PALETTE)]
            k += 1
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)


def _bar_chart(scores: dict[str, Any], dimension: str, colours: dict[str, str]) -> str:
    """Mean score (all judges) per direction and system, with the confidence interval."""
    import numpy as np

    directions = list(scores["directions"])
    systems = list(scores["systems"])
    fig = _figure(max(3.6, 1.2 + 0.5 * len(systems) * len(directions)), 3.0)
    ax = fig.add_subplot()
    width = 0.8 / len(systems)
    x = np.arange(len(directions))
    for k, s in enumerate(systems):
        means, lows, highs = [], [], []
        for p in directions:
            v = scores["scores"][p][s]["all"][dimension]
            m = v["mean"] if v["mean"] is not None else np.nan
            means.append(m)
            lo, hi = v["ci"]
            lows.append(m - lo if lo is not None else 0)
            highs.append(hi - m if hi is not None else 0)
        pos = x - 0.4 + width * (k + 0.5)
        ax.bar(pos, means, width * 0.92, color=colours[s], label=s)
        ax.errorbar(pos, means, yerr=[lows, highs], fmt="none", ecolor="#333", capsize=3, lw=1)
        for px, m in zip(pos, means, strict=True):
            if not np.isnan(m):
                ax.text(px, 1.5, f"{m:.0f}", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(x, directions)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (0-100)")
    ax.set_title(dimension, fontsize=11)
    _style(ax)
    return _png(fig)


def _distribution_chart(scores: dict[str, Any], direction: str, colours: dict[str, str]) -> str:
    """Window scores (mean over judges) per system, one panel per dimension: box plots with
    the windows as points."""
    import numpy as np

    systems = list(scores["systems"])
    per = scores["window_scores"][direction]
    fig = _figure(max(7.5, 2.0 + 0.9 * len(systems) * 3), 3.0)
    rng = np.random.default_rng(0)
    for k, d in enumerate(DIMENSIONS):
        ax = fig.add_subplot(1, 3, k + 1)
        data = [[v for v in per[s][d] if v is not None] for s in systems]
        filled = [(i, vals) for i, vals in enumerate(data) if vals]
        if filled:
            box = ax.boxplot(
                [vals for _, vals in filled],
                positions=[i for i, _ in filled],
                widths=0.6,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": "#222"},
            )
            for patch, (i, _) in zip(box["boxes"], filled, strict=True):
                patch.set_facecolor(colours[systems[i]])
                patch.set_alpha(0.45)
            for i, vals in filled:
                jitter = rng.uniform(-0.18, 0.18, len(vals))
                ax.scatter(
                    np.full(len(vals), i) + jitter, vals, s=9, color=colours[systems[i]], zorder=3
                )
        ax.set_xticks(range(len(systems)), systems, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(systems) - 0.4)
        ax.set_ylim(-3, 103)
        ax.set_title(d, fontsize=10)
        _style(ax)
    fig.suptitle(f"{direction}: window scores", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _agreement_chart(agreement: dict[str, Any], judge: str) -> str:
    """Per direction: judge vs human scores (with the identity line), and the Bland-Altman
    plot of their difference against their mean."""
    import numpy as np

    result = agreement["judges"][judge]
    directions = list(result["directions"])
    fig = _figure(8.0, 3.2 * len(directions))
    for k, p in enumerate(directions):
        pts = np.asarray(agreement["points"][judge][p], dtype=float).reshape(-1, 2)
        stats = result["directions"][p]
        ax = fig.add_subplot(len(directions), 2, 2 * k + 1)
        ax.plot([0, 100], [0, 100], color="#bbb", lw=1, ls="--")
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], s=12, alpha=0.7, color=PALETTE[0])
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("human score")
        ax.set_ylabel("judge score")
        ax.set_title(
            f"{p}: rho {_num(stats['spearman'], 2)}, tau {_num(stats['kendall'], 2)}, "
            f"n {stats['n']}",
            fontsize=10,
        )
        _style(ax)
        ax = fig.add_subplot(len(directions), 2, 2 * k + 2)
        ba = stats["bland_altman"]
        if len(pts):
            ax.scatter(pts.mean(axis=1), pts[:, 1] - pts[:, 0], s=12, alpha=0.7, color=PALETTE[1])
        for key, style in (("mean_diff", "-"), ("loa_low", "--"), ("loa_high", "--")):
            if ba[key] is not None:
                ax.axhline(ba[key], color="#444", lw=1, ls=style)
        ax.axhline(0, color="#bbb", lw=0.8)
        marks = [0.0, *(ba[k] for k in ("loa_low", "loa_high") if ba[k] is not None)]
        if len(pts):
            marks += [float((pts[:, 1] - pts[:, 0]).min()), float((pts[:, 1] - pts[:, 0]).max())]
        pad = max(5.0, 0.08 * (max(marks) - min(marks)))
        ax.set_ylim(min(marks) - pad, max(marks) + pad)
        ax.set_xlim(-3, 103)
        ax.set_xlabel("mean of judge and human")
        ax.set_ylabel("judge - human")
        ax.set_title(
            f"Bland-Altman: bias {_num(ba['mean_diff'])}, limits {_num(ba['loa_low'])} to "
            f"{_num(ba['loa_high'])}",
            fontsize=10,
        )
        _style(ax)
    fig.suptitle(f"judge {judge} against human scores", fontsize=11)
    fig.tight_layout()
    return _png(fig)


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>alpo eval report</title>
<style>
 body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK SC",
        sans-serif; color: #1d1d1f; margin: 0; background: #f6f6f4; }
 main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
 h1 { font-size: 24px; margin: 4px 0 2px; }
 h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #ddd; }
 h3 { font-size: 15px; margin: 20px 0 8px; }
 .sub { color: #666; margin: 0 0 16px; }
 table { border-collapse: collapse; background: #fff; margin: 6px 0 14px; font-size: 13px; }
 th, td { border: 1px solid #e1e1e1; padding: 4px 9px; text-align: left; vertical-align: top; }
 th { background: #efefec; font-weight: 600; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
 .ci { color: #888; font-size: 12px; }
 .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
           margin-right: 6px; vertical-align: baseline; }
 .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 12px; }
 .card { background: #fff; border: 1px solid #e1e1e1; border-radius: 6px; padding: 8px; }
 img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
 .wtl { display: flex; width: 180px; height: 12px; border-radius: 3px; overflow: hidden;
        background: #eee; }
 .wtl span { display: block; height: 100%; }
 .win { background: #55A868; } .tie { background: #c9c9c9; } .loss { background: #C44E52; }
 .scroll { overflow-x: auto; }
 .bad { color: #b3261e; font-weight: 600; } .good { color: #1e7b34; font-weight: 600; }
 .missing { color: #b3261e; font-style: italic; }
 details { margin: 6px 0 12px; } summary { cursor: pointer; color: #335; }
 .kv td:first-child { color: #555; }
</style>
</head>
<body><main>
<h1>alpo eval report</h1>
{% if scores %}
<p class="sub">{{ scores.data.windows }} test windows of {{ scores.data.path }} ·
 directions: {{ scores.directions | join(", ") }} · systems: {{ scores.systems | length }} ·
 judges: {{ judge_names | join(", ") }} · rubric: {{ scores.settings.rubric }} ·
 {{ (scores.settings.confidence * 100) | round | int }}% bootstrap intervals over windows
 ({{ scores.settings.bootstrap }} resamples)</p>

<h2>Systems and judges</h2>
<table>
<tr><th>system</th><th>kind</th><th>source</th><th>lines</th><th>missing lines</th>
<th>retries / splits</th></tr>
{% for name, s in scores.systems.items() %}
<tr><td><span class="swatch" style="background: {{ colours[name] }}"></span>{{ name }}</td>
<td>{{ s.kind }}</td><td>{{ s.source }}</td><td class="n">{{ s.lines }}</td>
<td class="n {{ 'bad' if s.missing_lines else '' }}">{{ s.missing_lines }}</td>
<td class="n">{% if s.kind == "model" %}{{ s.retries }} / {{ s.splits }}{% else %}–{% endif %}</td>
</tr>
{% endfor %}
</table>
<table>
<tr><th>judge</th><th>model</th><th>backend</th><th>judged</th><th>unscored</th>
<th>rejected replies</th></tr>
{% for name, j in scores.judges.items() %}
<tr><td>{{ name }}</td><td>{{ j.model }}</td><td>{{ j.backend }}</td>
<td class="n">{{ j.judged }}</td>
<td class="n {{ 'bad' if j.unscored else '' }}">{{ j.unscored }}</td>
<td class="n">{{ j.rejected_replies }}</td></tr>
{% endfor %}
</table>

<h2>Mean scores</h2>
{% for p in scores.directions %}
<h3>{{ p }} · {{ scores.directions[p].windows }} windows · mean over judges</h3>
<table>
<tr><th rowspan="2">system</th>{% for d in dimensions %}<th colspan="2">{{ d }}</th>
{% endfor %}<th rowspan="2">windows scored</th></tr>
<tr>{% for d in dimensions %}<th>mean</th><th class="ci">interval</th>{% endfor %}</tr>
{% for s, by_judge in scores.scores[p].items() %}
<tr><td><span class="swatch" style="background: {{ colours[s] }}"></span>{{ s }}</td>
{% for d in dimensions %}{% set v = by_judge["all"][d] %}
<td class="n"><b>{{ v.mean | num }}</b></td>
<td class="n ci">{{ v.ci[0] | num }} – {{ v.ci[1] | num }}</td>
{% endfor %}
<td class="n">{{ by_judge["all"][dimensions[0]].n }}</td></tr>
{% endfor %}
</table>
{% if judge_names | length > 1 %}
<details><summary>per judge</summary>
{% for j in judge_names %}
<table>
<tr><th>judge {{ j }}</th>{% for d in dimensions %}<th colspan="2">{{ d }}</th>{% endfor %}
<th>windows scored</th></tr>
{% for s, by_judge in scores.scores[p].items() %}
<tr><td>{{ s }}</td>{% for d in dimensions %}{% set v = by_judge[j][d] %}
<td class="n">{{ v.mean | num }}</td>
<td class="n ci">{{ v.ci[0] | num }} – {{ v.ci[1] | num }}</td>{% endfor %}
<td class="n">{{ by_judge[j][dimensions[0]].n }}</td></tr>
{% endfor %}
</table>
{% endfor %}
</details>
{% endif %}
{% endfor %}

<h2>Scores per dimension</h2>
<p class="sub">Mean over judges per direction; the error bars are the
{{ (scores.settings.confidence * 100) | round | int }}% intervals.
{% for s in scores.systems %}<span class="swatch" style="background: {{ colours[s] }};
 margin-left: 10px"></span>{{ s }}{% endfor %}</p>
<div class="grid">
{% for d in dimensions %}
<div class="card"><img alt="{{ d }} scores" src="{{ bars[d] }}"></div>
{% endfor %}
</div>

<h2>Score distributions</h2>
{% for p, img in distributions.items() %}
<div class="card"><img alt="{{ p }} distributions" src="{{ img }}"></div>
{% endfor %}

<h2>Pairwise comparison</h2>
<p class="sub">Per window, the mean over judges of each system; a system wins when its score is
higher{% if scores.settings.tie_margin %} by more than {{ scores.settings.tie_margin }}{% endif %};
the difference is the first system's score minus the second's.</p>
{% for p, by_dim in scores.pairwise.items() %}
<h3>{{ p }}</h3>
<div class="scroll"><table>
<tr><th>system</th><th>vs</th>{% for d in dimensions %}<th>{{ d }}: win / tie / loss</th>
<th>difference</th>{% endfor %}</tr>
{% for k in range(by_dim[dimensions[0]] | length) %}
{% set first = by_dim[dimensions[0]][k] %}
<tr><td>{{ first.system }}</td><td>{{ first.other }}</td>
{% for d in dimensions %}{% set r = by_dim[d][k] %}
<td><div class="wtl" title="{{ r.win }} / {{ r.tie }} / {{ r.loss }} of {{ r.n }}">
<span class="win" style="width: {{ (100 * r.win / r.n) if r.n else 0 }}%"></span>
<span class="tie" style="width: {{ (100 * r.tie / r.n) if r.n else 0 }}%"></span>
<span class="loss" style="width: {{ (100 * r.loss / r.n) if r.n else 0 }}%"></span></div>
<span class="ci">{{ r.win | pct(r.n) }} / {{ r.tie | pct(r.n) }} / {{ r.loss | pct(r.n) }}
 (n={{ r.n }})</span></td>
<td class="n">{{ r.mean_diff | num }} <span class="ci">[{{ r.ci[0] | num }},
 {{ r.ci[1] | num }}]</span></td>
{% endfor %}</tr>
{% endfor %}
</table></div>
{% endfor %}

<h2>Judge failures</h2>
<p class="sub">A reply is rejected when it is not exactly the asked-for JSON with integer scores
0..100; it is asked again up to {{ scores.settings.retries }} times. A window and dimension
without any valid reply stays unscored and is left out of the means.</p>
<table>
<tr><th>judge</th><th>system</th><th>judged</th><th>unscored</th><th>rejected replies</th>
<th>reasons</th></tr>
{% for j, info in scores.judges.items() %}{% for s, f in info.by_system.items() %}
<tr><td>{{ j }}</td><td>{{ s }}</td><td class="n">{{ f.judged }}</td>
<td class="n {{ 'bad' if f.unscored else '' }}">{{ f.unscored }}</td>
<td class="n">{{ f.rejected_replies }}</td>
<td>{% for why, n in f.reasons.items() %}{{ why }} ({{ n }}){% if not loop.last %}; {% endif %}
{% else %}–{% endfor %}</td></tr>
{% endfor %}{% endfor %}
</table>
{% endif %}

{% if agreement %}
<h2>Agreement with human scores</h2>
<p class="sub">{{ agreement.rows }} human-scored translations from {{ agreement.human }};
rubric: {{ agreement.rubric }}. A judge is trusted as reward model when Spearman's rho is at
least {{ agreement.threshold }} in every direction. Bland-Altman: judge minus human, mean and
95% limits of agreement.</p>
{% for j, r in agreement.judges.items() %}
<h3>{{ j }} ({{ r.model }}):
{% if r.trusted %}<span class="good">trusted</span>{% else %}<span class="bad">not trusted
</span>{% endif %}</h3>
<table>
<tr><th>direction</th><th>rows</th><th>scored</th><th>Spearman rho</th><th>Kendall tau-b</th>
<th>bias</th><th>limits of agreement</th><th>rho &ge; {{ agreement.threshold }}</th></tr>
{% for p, d in r.directions.items() %}
<tr><td>{{ p }}</td><td class="n">{{ d.rows }}</td><td class="n">{{ d.n }}</td>
<td class="n">{{ d.spearman | num(3) }}</td><td class="n">{{ d.kendall | num(3) }}</td>
<td class="n">{{ d.bland_altman.mean_diff | num }}</td>
<td class="n">{{ d.bland_altman.loa_low | num }} to {{ d.bland_altman.loa_high | num }}</td>
<td>{% if d.trusted %}<span class="good">yes</span>{% else %}<span class="bad">no</span>
{% endif %}</td></tr>
{% endfor %}
<tr><td><i>all</i></td><td class="n">{{ agreement.rows }}</td><td class="n">{{ r.all.n }}</td>
<td class="n">{{ r.all.spearman | num(3) }}</td><td class="n">{{ r.all.kendall | num(3) }}</td>
<td class="n">{{ r.all.bland_altman.mean_diff | num }}</td>
<td class="n">{{ r.all.bland_altman.loa_low | num }} to
 {{ r.all.bland_altman.loa_high | num }}</td><td></td></tr>
</table>
<div class="card"><img alt="agreement of {{ j }}" src="{{ agreement_plots[j] }}"></div>
{% endfor %}
{% endif %}

{% if scores %}
<h2>Where the systems differ most</h2>
{% for p, examples in scores.examples.items() %}
<h3>{{ p }}</h3>
{% for ex in examples %}
<details {% if loop.index <= 2 %}open{% endif %}><summary>window {{ ex.window_id }}
 (score range summed over dimensions: {{ ex.spread | num }})</summary>
<div class="scroll"><table>
<tr><th>#</th><th>source</th>{% for s in ex.systems %}<th>
<span class="swatch" style="background: {{ colours[s] }}"></span>{{ s }}</th>{% endfor %}</tr>
{% for line in ex.source %}{% set i = loop.index0 %}
<tr><td class="n">{{ loop.index }}</td><td>{{ line }}</td>
{% for s, v in ex.systems.items() %}
<td>{% if v.lines[i] is none %}<span class="missing">missing</span>{% else %}{{ v.lines[i] }}
{% endif %}</td>{% endfor %}</tr>
{% endfor %}
<tr><th></th><th>scores (acc / nat / viv)</th>
{% for s, v in ex.systems.items() %}<th class="n">
{% for d in dimensions %}{{ v.scores[d] | num(0) }}{% if not loop.last %} / {% endif %}
{% endfor %}</th>{% endfor %}</tr>
</table></div>
</details>
{% endfor %}
{% endfor %}
{% endif %}
</main></body>
</html>
"""
