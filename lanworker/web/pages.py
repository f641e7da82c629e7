"""Server-rendered HTML of the status view. Invariant: every value that comes from a job
(ids, names, tags, commands, stdout, errors) passes through `e()` before it is written,
so a `<script>` anywhere in a job is shown as text. No CDN, no build step: the little CSS
and JS there is lives in this module."""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any
from urllib.parse import quote, urlencode

from lanworker.web.formatting import human_duration, when
from lanworker.web.readmodel import STATE_ORDER, JobRow

STATE_COLOURS = {
    "QUEUED": "#6b7280",
    "INITIALIZING": "#0e7490",
    "RUNNING": "#1d4ed8",
    "CANCELING": "#b45309",
    "COMPLETE": "#15803d",
    "EXECUTOR_ERROR": "#b91c1c",
    "SYSTEM_ERROR": "#7e22ce",
    "CANCELED": "#57534e",
}

CSS = """
:root { color-scheme: light; --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#f9fafb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display:flex; flex-wrap:wrap; gap:.5rem 1.5rem; align-items:baseline; padding:.8rem 1rem; background:#111827; color:#fff; }
header a { color:#fff; text-decoration:none; font-weight:600; }
main { padding: 1rem; max-width: 1400px; margin: 0 auto; }
a { color:#1d4ed8; }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #f59e0b; outline-offset: 1px; }
.counts { display:flex; flex-wrap:wrap; gap:.5rem; margin:.2rem 0 1rem; padding:0; list-style:none; }
.counts a { display:block; padding:.35rem .7rem; border-radius:999px; background:#fff; border:1px solid var(--line); text-decoration:none; color:var(--fg); }
.counts a.current { border-color:#111827; box-shadow: inset 0 0 0 1px #111827; }
.state { display:inline-block; padding:.1rem .5rem; border-radius:4px; color:#fff; font-size:.8rem; font-weight:600; letter-spacing:.02em; white-space:nowrap; }
.panels { display:grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap:1rem; margin-bottom:1rem; }
.panel { background:#fff; border:1px solid var(--line); border-radius:8px; padding:.8rem 1rem; }
.panel h2 { font-size:.85rem; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:0 0 .5rem; }
form.filters { display:flex; flex-wrap:wrap; gap:.5rem; margin-bottom:.8rem; }
input, select, button { font: inherit; padding:.35rem .6rem; border:1px solid #cbd5e1; border-radius:6px; background:#fff; }
button { cursor:pointer; }
button.danger { background:#b91c1c; color:#fff; border-color:#991b1b; }
.table { overflow-x:auto; background:#fff; border:1px solid var(--line); border-radius:8px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:.45rem .6rem; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:.8rem; color:var(--muted); font-weight:600; white-space:nowrap; }
td.mono, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:.85rem; word-break:break-all; }
pre { background:#0f172a; color:#e2e8f0; padding:.7rem; border-radius:6px; overflow:auto; max-height:24rem; white-space:pre-wrap; word-break:break-all; }
.muted { color:var(--muted); }
.pager { margin:.8rem 0; }
dl.facts { display:grid; grid-template-columns: max-content 1fr; gap:.3rem 1rem; margin:0; }
dl.facts dt { color:var(--muted); }
ol.timeline { margin:0; padding-left:1.2rem; }
@media (max-width: 640px) { .hide-narrow { display:none; } main { padding:.5rem; } }
h1.list-title { margin:.2rem 0 .6rem; }
h1.job-title { font-size:1.2rem; }
p.error, span.error { color:#b91c1c; }
.state-other { background:#374151; }
""" + "".join(f".state-{state} {{ background:{colour}; }}\n" for state, colour in STATE_COLOURS.items())

REFRESH_JS = """
(function () {
  var body = document.getElementById('job-rows'), counts = document.getElementById('counts');
  if (!body) return;
  var busy = false;
  function refresh() {
    if (busy || document.hidden) return;
    var active = document.activeElement;
    if (active && (active.tagName === 'INPUT' || active.tagName === 'SELECT')) return;
    busy = true;
    var stale = document.getElementById('stale');
    function failed(why) { stale.textContent = ' Not refreshed: ' + why; return null; }
    fetch('/fragments/jobs' + window.location.search, {credentials: 'same-origin'})
      .then(function (r) {
        if (r.ok) return r.json();
        return r.json().then(function (e) { return failed((e && e.msg) || 'HTTP ' + r.status); },
                             function () { return failed('HTTP ' + r.status); });
      }, function () { return failed('the server did not answer'); })
      .then(function (data) {
        if (data) { body.innerHTML = data.rows; counts.innerHTML = data.counts; document.getElementById('updated').textContent = data.updated; stale.textContent = ''; }
      })
      .finally(function () { busy = false; });
  }
  setInterval(refresh, 5000);
})();
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this module's own style and script run: no inline attribute, no other origin, no frame.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_sha256(CSS)}; script-src {_sha256(REFRESH_JS)}; "
    "connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY"}


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def job_href(job_id: str) -> str:
    """A link to a job page: the id percent-encoded (it may hold '/'), then HTML-escaped."""
    return e("/jobs/" + quote(job_id, safe=""))


def state_badge(state: str) -> str:
    known = state if state in STATE_COLOURS else "other"
    return f'<span class="state state-{known}">{e(state)}</span>'


def layout(title: str, body: str, script: str = "") -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} - lanworker</title><style>{CSS}</style></head><body>"
        '<header><a href="/">lanworker</a><span class="muted">jobs and workers</span></header>'
        f"<main>{body}</main>{f'<script>{script}</script>' if script else ''}</body></html>"
    )


def counts_html(counts: dict[str, int], current: str | None, query: str | None) -> str:
    total = sum(counts.values())
    items = [_count_link("all", total, None, current, query)]
    items += [_count_link(state, count, state, current, query) for state, count in counts.items()]
    return "".join(items)


def _count_link(label: str, count: int, state: str | None, current: str | None, query: str | None) -> str:
    params = {k: v for k, v in (("state", state), ("q", query)) if v}
    css = ' class="current"' if state == current else ""
    badge = state_badge(label) if state else e(label)
    return f'<li><a{css} href="/?{e(urlencode(params))}">{badge} {count}</a></li>'


def rows_html(rows: list[JobRow]) -> str:
    if not rows:
        return '<tr><td colspan=8 class="muted">No jobs match.</td></tr>'
    out = []
    for job in rows:
        out.append(
            "<tr>"
            f'<td class="mono"><a href="{job_href(job.id)}">{e(job.id)}</a></td>'
            f"<td>{e(job.name)}</td>"
            f'<td class="mono hide-narrow">{e(job.image)}<br><span class="muted">{e(job.command)}</span></td>'
            f"<td>{state_badge(job.state)}</td>"
            f'<td class="hide-narrow">{e(when(job.created_at))}</td>'
            f"<td>{e(human_duration(job.duration_s))}</td>"
            f'<td class="mono hide-narrow">{e(job.worker)}</td>'
            f"<td>{e('' if job.exit_code is None else job.exit_code)}</td>"
            "</tr>"
        )
    return "".join(out)


def chart_svg(per_minute: list[int]) -> str:
    """Jobs finished per minute as bars, drawn here: no library, no network."""
    width, height, gap = 300, 80, 1
    top = max(per_minute) or 1
    bar = width / max(1, len(per_minute))
    bars = []
    for index, count in enumerate(per_minute):
        h = round(count / top * (height - 14), 1)
        x = round(index * bar, 1)
        bars.append(
            f'<rect x="{x}" y="{height - h}" width="{max(1.0, bar - gap):.1f}" height="{h}" fill="#2563eb">'
            f"<title>{count} job(s), {len(per_minute) - index} min ago</title></rect>"
        )
    total = sum(per_minute)
    return (
        f'<svg role="img" aria-label="{total} jobs finished in the last {len(per_minute)} minutes" '
        f'viewBox="0 0 {width} {height}" width="100%" height="{height}" preserveAspectRatio="none">'
        f'<text x="0" y="10" font-size="10" fill="#6b7280">max {top}/min</text>{"".join(bars)}</svg>'
        f'<div class="muted">{total} finished in the last {len(per_minute)} min</div>'
    )


def overview_html(view: dict[str, Any]) -> str:
    queue = view.get("queue")
    queue_text = (
        f"{queue['visible']} waiting, {queue['in_flight']} being worked on"
        if queue
        else "unknown (queue unreachable)"
    )
    workers = view["workers"]
    worker_rows = (
        "".join(
            f'<tr><td class="mono">{e(w["worker"])}</td><td>{e(human_duration(w["last_seen_s_ago"]))} ago</td>'
            f"<td>{e(w['jobs'])}</td></tr>"
            for w in workers[:10]
        )
        or '<tr><td colspan=3 class="muted">No worker events in the last 15 min.</td></tr>'
    )
    return (
        '<section class="panels">'
        f'<div class="panel"><h2>Queue</h2><p>{e(queue_text)}</p></div>'
        '<div class="panel"><h2>Workers seen recently</h2><table><thead><tr><th>worker</th><th>last event</th>'
        f"<th>jobs</th></tr></thead><tbody>{worker_rows}</tbody></table></div>"
        f'<div class="panel"><h2>Jobs finished per minute</h2>{chart_svg(view["finished_per_minute"])}</div>'
        "</section>"
    )


def list_page(
    rows: list[JobRow],
    view: dict[str, Any],
    state: str | None,
    query: str | None,
    next_token: str | None,
) -> str:
    """The job list; view is the overview, with the time it was made (`updated`)."""
    options = "".join(
        f'<option value="{e(s)}"{" selected" if s == state else ""}>{e(s)}</option>' for s in STATE_ORDER
    )
    pager = ""
    if next_token:
        params = {k: v for k, v in (("state", state), ("q", query), ("page_token", next_token)) if v}
        pager = f'<p class="pager"><a href="/?{e(urlencode(params))}">Older jobs &rarr;</a></p>'
    body = (
        '<h1 class="list-title">Jobs</h1>'
        f'<ul class="counts" id="counts">{counts_html(view["counts"], state, query)}</ul>'
        f"{overview_html(view)}"
        '<form class="filters" method="get" action="/" role="search">'
        '<label for="state-filter" class="muted">State</label>'
        f'<select id="state-filter" name="state"><option value="">any</option>{options}</select>'
        f'<input type="search" name="q" value="{e(query)}" placeholder="id, name or tag" aria-label="Search by id, name or tag">'
        '<button type="submit">Filter</button></form>'
        '<div class="table"><table><thead><tr><th>ID</th><th>Name / service</th><th class="hide-narrow">Image / command</th>'
        '<th>State</th><th class="hide-narrow">Created (UTC)</th><th>Duration</th><th class="hide-narrow">Worker</th>'
        f'<th>Exit</th></tr></thead><tbody id="job-rows">{rows_html(rows)}</tbody></table></div>'
        f'{pager}<p class="muted">Updated <span id="updated">{e(view["updated"])}</span>; refreshes every 5 s.'
        '<span id="stale" class="error"></span></p>'
    )
    return layout("Jobs", body, REFRESH_JS)


def job_page(job: dict[str, Any], csrf: str) -> str:
    facts = [
        ("State", state_badge(job["state"])),
        ("Name / service", e(job["name"])),
        ("Image", f'<span class="mono">{e(job["image"])}</span>'),
        ("Command", f'<span class="mono">{e(job["command"])}</span>'),
        ("Created (UTC)", e(when(job["created_at"]))),
        ("Duration", e(human_duration(job["duration_s"]))),
        ("Worker", f'<span class="mono">{e(job["worker"])}</span>'),
        ("Exit code", e("" if job["exit_code"] is None else job["exit_code"])),
        ("Attempt", e(job["attempt"])),
        ("Tags", e(", ".join(f"{k}={v}" for k, v in job["tags"].items()))),
    ]
    if job["reason"] or job["error"]:
        facts.append(("Reason", f"<strong>{e(job['reason'])}</strong> {e(job['error'])}"))
    cancel = ""
    if job["active"]:
        cancel = (
            f'<form method="post" action="{job_href(job["id"])}/cancel" '
            "onsubmit=\"return confirm('Cancel this job? A running command is stopped.');\">"
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<button type="submit" class="danger">Cancel job</button></form>'
        )
    timeline = "".join(
        f"<li>{e(when(float(event.get('time') or 0)))} <strong>{e(event.get('state'))}</strong>"
        f' <span class="muted mono">{e(event.get("worker_id") or "")}</span>'
        f"{(' ' + e(event.get('reason'))) if event.get('reason') else ''}</li>"
        for event in job["events"]
    )
    streams = "".join(
        f"<h3>{e(name)}</h3><pre>{e(text)}</pre>"
        for name, text in (("stdout", job["stdout"]), ("stderr", job["stderr"]))
        if text
    )
    for index, executor in enumerate(job["executors"]):
        for name in ("stdout", "stderr"):
            if executor.get(name) and len(job["executors"]) > 1:
                streams += f"<h3>executor {index} {name}</h3><pre>{e(executor[name])}</pre>"
    files = "".join(
        f'<tr><td>{e(kind)}</td><td class="mono">{e(item.get("uri"))}</td><td>{e(item.get("size"))}</td>'
        f'<td class="mono">{e(item.get("sha256"))}</td></tr>'
        for kind, items in (("input", job["inputs"]), ("output", job["outputs"]))
        for item in items
    )
    system = "".join(f"<li>{e(line)}</li>" for line in job["system_logs"])
    body = (
        f'<p><a href="/">&larr; all jobs</a></p><h1 class="mono job-title">{e(job["id"])}</h1>'
        f"{cancel}"
        '<div class="panels"><div class="panel"><h2>Job</h2><dl class="facts">'
        + "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in facts)
        + '</dl></div><div class="panel"><h2>Timeline</h2>'
        f'<ol class="timeline">{timeline or "<li class=muted>no events yet</li>"}</ol></div></div>'
        + (f'<div class="panel"><h2>System logs</h2><ul>{system}</ul></div>' if system else "")
        + f'<section class="panel"><h2>Output</h2>{streams or "<p class=muted>nothing captured</p>"}</section>'
        '<section class="panel"><h2>Files</h2><div class="table"><table><thead><tr><th>kind</th><th>uri</th>'
        f"<th>bytes</th><th>sha256</th></tr></thead><tbody>{files or '<tr><td colspan=4 class=muted>none</td></tr>'}"
        "</tbody></table></div></section>"
        f'<section class="panel"><h2>As submitted</h2><pre>{e(job["submitted_text"])}</pre></section>'
    )
    return layout(job["id"], body)


def login_page(error: str | None = None) -> str:
    message = f'<p class="error">{e(error)}</p>' if error else ""
    return layout(
        "Sign in",
        '<h1>Sign in</h1><p class="muted">This server needs its bearer token.</p>'
        f'{message}<form method="post" action="/login"><label for="token">Token</label> '
        '<input id="token" type="password" name="token" autocomplete="current-password" required> '
        '<button type="submit">Sign in</button></form>',
    )
