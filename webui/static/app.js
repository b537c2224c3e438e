// Live updates of the decision list: new records arrive as server-sent
// events and are added at the top. Every value is set as text, never as
// markup: names come from the agent.
"use strict";
(function () {
  const table = document.getElementById("events");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const [verdict, layer, agent, reason, host] = (table.dataset.filter || "").split("|");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries({ verdict, layer, agent, reason, host })) if (v) q.set(k, v);
  const first = body.querySelector("a");
  if (first) q.set("after", first.textContent);
  if (new URLSearchParams(location.search).get("before")) return; // an older page stays still
  const base = (document.querySelector('meta[name="base"]') || {}).content || "";
  const source = new EventSource(base + "/api/events/stream?" + q.toString());
  const live = document.getElementById("live");
  source.onopen = function () { live.hidden = false; };
  source.onerror = function () { live.hidden = true; };
  source.onmessage = function (e) {
    const rec = JSON.parse(e.data);
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.className = "new";
    const id = document.createElement("td");
    const a = document.createElement("a");
    a.href = base + "/events/" + encodeURIComponent(rec.id);
    a.textContent = String(rec.id);
    id.appendChild(a);
    tr.appendChild(id);
    const when = rec.time.replace("T", " ").replace(/\.\d+Z$/, " UTC");
    for (const v of [when, rec.agent, rec.layer, rec.verdict, rec.reason, rec.name, rec.dst, rec.count]) {
      const td = document.createElement("td");
      td.textContent = v === undefined || v === null ? "" : String(v);
      tr.appendChild(td);
    }
    tr.children[6].className = "name";
    body.insertBefore(tr, body.firstChild);
  };
})();
