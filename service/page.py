"""The page at ``/``: what the service serves and how to call it, then the interactive API
reference (Swagger UI, from the files BentoML ships, so the page needs no network at all).

No third-party script, tracker or font: everything the page loads comes from this service,
and Swagger UI's online validator is switched off.
"""

from __future__ import annotations

import functools
import html
import io
import json
import math
import re
from typing import TYPE_CHECKING, Any

from service import openapi
from service.http import Reply
from service.interfaces.base import BYTES
from service.protocols import v2_names

if TYPE_CHECKING:
    from service.inference import Runtime

STATIC = "/static_content"  # Swagger UI's files, served by BentoML
DEFAULT_HOST = "localhost:3000"
HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")
MAX_EXAMPLE_VALUES = 1024  # a digit (784 values) yes, a 224x224 photo no


def _models(runtime: Runtime) -> str:
    rows = []
    for model in sorted(runtime.registry.models.values(), key=lambda m: m.name):
        latest = model.latest()
        if latest is None or latest.version is None:
            reason = html.escape(model.reason or model.state)
            rows.append(
                f"<tr><td><a href='/models/{html.escape(model.name)}'>{html.escape(model.name)}"
                f"</a></td><td>{model.state}</td><td colspan='3'>{reason}</td></tr>"
            )
            continue
        version = latest.version
        title = html.escape(version.manifest.get("title") or "")
        if version.profile == "quick":  # trained in minutes on subsets: not for real use
            title += (
                " <strong class='quick' title='quick profile: small subsets, 1-2 epochs; "
                "for tests and trials, not for real predictions'>quick profile</strong>"
            )
        calls = []
        for name, view in version.views.items():
            native = (
                f"<code>POST /{html.escape(f'{model.name}/{name}')}</code> " if view.rich else ""
            )
            calls.append(
                f"<li><b>{html.escape(name)}</b>: takes {html.escape(view.kind.summary)}; "
                f"answers {html.escape(view.answer.summary)}. {native}</li>"
            )
        v2 = ", ".join(f"<code>{html.escape(n)}</code>" for n in sorted(v2_names.names(version)))
        served = ", ".join(str(v.number) for v in model.ready_versions)
        card = f"/models/{model.name}/versions/{latest.number}/card"
        rows.append(
            f"<tr><td><a href='/models/{html.escape(model.name)}'>{html.escape(model.name)}</a>"
            f"<br><small>{title}</small></td><td>{model.state}</td><td>{served}</td>"
            f"<td><ul>{''.join(calls)}</ul>V2: {v2}; TF Serving: "
            f"<code>/v1/models/{html.escape(model.name)}:predict</code></td>"
            f"<td><a href='{html.escape(card)}'>model card</a></td></tr>"
        )
    return "\n".join(rows)


HEALTH_REFRESH_S = 5
# The live view: plain DOM building from /models (textContent only, never innerHTML with
# data, so a model's words cannot become markup). Labels, traffic and shadow come from
# service.rollout; storage_error is shown when /models has it.
HEALTH_SCRIPT = """
function cell(row, value) {
  const td = document.createElement("td");
  if (value instanceof Node) td.appendChild(value); else td.textContent = value;
  row.appendChild(td); return td;
}
function shown(value) {
  if (value === undefined || value === null) return "n/a";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}
function labelsText(labels) {
  if (!labels) return "n/a";
  const pairs = Object.entries(labels).map(([l, v]) => l + " \u2192 v" + v);
  return pairs.length ? pairs.join(", ") : "none";
}
function trafficText(traffic) {
  if (!traffic) return "n/a";
  const shares = Object.entries(traffic.split || {}).map(([v, s]) => "v" + v + " " + s + "%");
  return (shares.join(", ") || "none") + (traffic.weights ? "" : " (latest)");
}
function shadowText(shadow) {
  if (shadow === undefined) return "n/a";
  if (shadow === null) return "off";
  let text = "v" + shadow.version + " at " + (100 * shadow.sample) + "%: ";
  const pair = shadow.pairs.reduce((a, b) => (a && a.items >= b.items ? a : b), null);
  if (!pair || !pair.items) return text + "no comparison yet";
  if (pair.agreement !== null)
    text += (100 * pair.agreement).toFixed(2) + "% " + pair.agreement_of.replace("_", " ")
      + " agreement";
  const diffs = Object.entries(pair.outputs).map(
    ([name, d]) => name + " max |diff| " + d.max_abs_diff.toPrecision(3));
  return text + (diffs.length ? "; " + diffs.join(", ") : "") + " (" + pair.items + " items, "
    + pair.requests.failed + " failed, " + pair.requests.dropped + " dropped)";
}
function driftCell(drift) {
  const box = document.createElement("div");
  if (!drift) { box.textContent = "n/a"; return box; }
  for (const [number, state] of Object.entries(drift.versions)) {
    const head = document.createElement("div");
    if (!state.reference) {
      head.textContent = "v" + number + ": no reference (no drift checks)";
      box.appendChild(head);
      continue;
    }
    head.textContent = "v" + number + ": " + state.items + " items"
      + (state.full ? "" : " (window of " + drift.window + " filling)");
    box.appendChild(head);
    const list = document.createElement("ul");
    for (const [feature, score] of Object.entries(state.scores)) {
      const item = document.createElement("li");
      item.className = "drift-score";
      item.textContent = feature + ": " + score.toFixed(3);
      if (score > drift.alert_threshold) item.style.color = "#d62728";
      list.appendChild(item);
    }
    box.appendChild(list);
    const link = document.createElement("a");
    link.href = state.plot;
    const img = document.createElement("img");
    img.src = state.plot + "&t=" + Date.now();
    img.width = 450;
    img.alt = "drift plot, version " + number;
    img.className = "drift-plot";
    link.appendChild(img); box.appendChild(link);
  }
  return box;
}
async function health() {
  let models;
  try { models = (await (await fetch("/models")).json()).models; } catch (e) { return; }
  const table = document.createElement("table");
  table.id = "health-table";
  const head = table.insertRow();
  const titles = ["model", "versions served", "labels", "traffic", "shadow agreement",
                  "drift (PSI)", "OOD rate", "last storage error"];
  for (const title of titles) {
    const th = document.createElement("th"); th.textContent = title; head.appendChild(th);
  }
  for (const m of models) {
    const row = table.insertRow();
    row.dataset.model = m.name;
    cell(row, m.name);
    const ready = (m.versions || []).filter(v => v.state === "ready");
    cell(row, ready.map(v => v.version).join(", ") || m.state);
    const labels = cell(row, labelsText(m.version_labels));
    labels.className = "labels";
    if (m.config_file && !m.config_file.valid) {  // refused: the last good settings serve
      const warning = document.createElement("div");
      warning.className = "config-error";
      warning.style.color = "#d62728";
      warning.textContent = m.config_file.error;
      labels.appendChild(warning);
    }
    cell(row, trafficText(m.traffic)).className = "traffic";
    cell(row, shadowText(m.shadow)).className = "shadow";
    cell(row, driftCell(m.drift));
    const ood = m.drift && m.drift.ood;
    let rate = "n/a";
    if (ood) {
      rate = ood.rate === null ? "no items yet"
        : (100 * ood.rate).toFixed(1) + "% of " + ood.items;
      if (ood.unavailable) rate += " (" + ood.unavailable + ")";
    }
    cell(row, rate).className = "ood-rate";
    cell(row, shown(m.storage_error));
  }
  document.getElementById("health").replaceChildren(table);
}
health();
setInterval(health, REFRESH_MS);
"""


def _code(text: str) -> str:
    """The document's Markdown `code` spans as HTML."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def render(runtime: Runtime, host: str = DEFAULT_HOST) -> str:
    version = html.escape(openapi._version())
    script = HEALTH_SCRIPT.replace("REFRESH_MS", str(HEALTH_REFRESH_S * 1000))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{openapi.TITLE} {version}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{STATIC}/swagger-ui.css">
<style>
body {{ font-family: sans-serif; margin: 0; }}
header, section {{ padding: 0 2rem; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; vertical-align: top; }}
ul {{ margin: 0; padding-left: 1.2rem; }}
code {{ background: #f3f3f3; padding: 0 .2rem; }}
.quick {{ background: #fde68a; padding: 0 .3rem; }}
</style></head>
<body>
<header>
<h1 id="title">{openapi.TITLE} <small>{version}</small></h1>
<p>{_code(html.escape(openapi.DESCRIPTION))}</p>
<p><a href="/models">/models</a> &middot; <a href="/docs.json">OpenAPI document</a> &middot;
<a href="/readyz">/readyz</a> &middot; <a href="/metrics">/metrics</a></p>
</header>
<section>
<h2>Models</h2>
<table id="models"><thead><tr><th>model</th><th>state</th><th>versions</th>
<th>how to call it</th><th></th></tr></thead>
<tbody>{_models(runtime)}</tbody></table>
<h2>Model health</h2>
<p>Live, from <a href="/models">/models</a> every {HEALTH_REFRESH_S} s: the versions served, drift
of each input feature and of the predicted classes against the training data (PSI; above
the alert threshold in red), the out-of-distribution rate, the version labels, each version's
share of the traffic, the shadow's agreement with the live answers (with a refused
<code>config.yaml</code> in red) and, where this server has one, the last storage error (n/a
otherwise).</p>
<div id="health">loading&hellip;</div>
<h2>Calling a model</h2>
<p>These commands run as they are (<code>--fail-with-body</code>: curl fails on a refusal).
Every model takes V2 (<code>/v2/models/NAME/infer</code>), TF Serving
(<code>/v1/models/NAME:predict</code>) and <code>/models/NAME/predict</code>; the reference
below has each body's schema.</p>
<pre id="examples">{html.escape(examples(runtime, host))}</pre>
<h2>API reference</h2>
</section>
<div id="swagger-ui"></div>
<script src="{STATIC}/swagger-ui-bundle.js"></script>
<script src="{STATIC}/swagger-ui-standalone-preset.js"></script>
<script>{script}</script>
<script>
window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: "/docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  }});
}};
</script>
</body></html>
"""


def reply(runtime: Runtime, host: str | None = None) -> Reply:
    """The page, its examples addressed to the host the browser used (when it is a plain
    host[:port]; a client's Host header is never written into the page otherwise)."""
    shown = host if host and HOST.fullmatch(host) else DEFAULT_HOST
    return Reply(render(runtime, shown).encode(), media_type="text/html; charset=utf-8")


def examples(runtime: Runtime, host: str) -> str:
    """One runnable command per served model: a V2 inference on a neutral input (zeros, or
    the input's lowest valid value) when its inputs are small numeric tensors, else its V2
    metadata (inputs and outputs)."""
    # No scheme, as in the README: curl takes http, and the page names no URL but its own.
    lines = [f"curl --fail-with-body {host}/models"]
    for model in sorted(runtime.registry.models.values(), key=lambda m: m.name):
        latest = model.latest()
        if latest is None or latest.version is None:
            continue
        version = latest.version
        body = _neutral_request(version.view(version.default_signature).inputs)
        url = f"{host}/v2/models/{model.name}"
        if body is None:
            lines.append(f"curl --fail-with-body {url}")
        else:
            lines.append(f"curl --fail-with-body -d '{body}' {url}/infer")
    return "\n".join(lines)


def _neutral_request(inputs: Any) -> str | None:
    tensors = []
    for tensor in inputs:
        shape = [1 if d < 0 else d for d in tensor.shape]
        count = math.prod(shape)
        if tensor.datatype == BYTES or count > MAX_EXAMPLE_VALUES:
            return None  # files or text, or too long to read: the metadata says what it takes
        value: Any = tensor.range[0] if tensor.range else 0
        if tensor.datatype == "BOOL":
            value = False
        elif not tensor.datatype.startswith("FP"):
            value = int(value)
        described = {"name": tensor.name, "shape": shape, "datatype": tensor.datatype}
        tensors.append({**described, "data": [value] * count})
    return json.dumps({"inputs": tensors}, separators=(", ", ": "))


@functools.cache
def _icon() -> bytes:
    """A 16x16 icon (a blue square, 1 KB), drawn once: browsers ask every page for
    ``/favicon.ico``, and a 404 each time was noise in the logs."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (16, 16), (37, 99, 235, 255)).save(out, format="ICO", sizes=[(16, 16)])
    return out.getvalue()


def favicon() -> Reply:
    return Reply(
        _icon(), media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"}
    )
