// The live alert feed: polls /console/data/feed every 2 s for events after the last one
// seen and prepends them (no reload); filters by metal and level.
"use strict";
(function () {
  const S = window.soilmon;
  const tbody = document.querySelector("#feed tbody");
  const fm = document.getElementById("f-metal"), fl = document.getElementById("f-level");
  let last = 0;
  const items = [];
  function shown(e) {
    return (!fm.value || e.metal === fm.value) && (!fl.value || e.level === fl.value);
  }
  function line(it, fresh) {
    const e = it.event;
    const tr = S.row([S.fmtTime(e.sampled_at), S.t(e.state) , S.t(e.level), e.point_id, it.point_name, e.metal,
      e.value_mgkg, e.incident_id ? S.link("/console/incidents/" + e.incident_id, S.t("details")) : ""]);
    tr.dataset.incident = e.incident_id || "";
    tr.dataset.point = e.point_id;
    tr.className = "feed-row" + (fresh ? " new" : "");
    return tr;
  }
  function redraw() {
    tbody.replaceChildren();
    for (const it of items) if (shown(it.event)) tbody.appendChild(line(it, false));
  }
  async function poll() {
    try {
      const fresh = await S.getJson("/console/data/feed?after=" + last);
      if (fresh.length) {
        last = Math.max(last, ...fresh.map(function (i) { return i.id; }));
        for (const it of fresh.slice().reverse()) {
          items.unshift(it);
          if (shown(it.event)) tbody.insertBefore(line(it, true), tbody.firstChild);
        }
        items.length = Math.min(items.length, 500);
      }
      document.getElementById("live").dataset.polled = String(Date.now());
    } catch (e) { /* the next poll retries */ }
    setTimeout(poll, 2000);
  }
  fm.addEventListener("change", redraw);
  fl.addEventListener("change", redraw);
  poll();
})();
