// The bureau map: points of the viewer's counties over Yangjiang's county outlines (an
// optional basemap when console.tiles_url is set), coloured by open incident level, else by
// soil tier; point type by symbol; filters; a popup with the latest result per metal.
"use strict";
(function () {
  const S = window.soilmon;
  const box = document.getElementById("map");
  const map = L.map(box, { preferCanvas: false }).setView([21.95, 111.85], 9);
  if (box.dataset.tiles) {
    L.tileLayer(box.dataset.tiles, { attribution: box.dataset.attribution || "", maxZoom: 18 }).addTo(map);
  } else {
    // Offline: a 0.5° graticule under the county outlines.
    for (let lon = 110.5; lon <= 113; lon += 0.5) L.polyline([[21, lon], [23, lon]], { color: "#c5d2da", weight: 1 }).addTo(map);
    for (let lat = 21; lat <= 23; lat += 0.5) L.polyline([[lat, 110.5], [lat, 113]], { color: "#c5d2da", weight: 1 }).addTo(map);
  }
  S.getJson("/console/assets/yangjiang-counties.geojson").then(function (g) {
    L.geoJSON(g, { style: { color: "#4a6b5d", weight: 1.5, fillColor: "#e7efe9", fillOpacity: 0.5 },
      onEachFeature: function (f, layer) { layer.bindTooltip(f.properties.name + " " + f.id); } }).addTo(map).bringToBack();
  }).catch(function () {});
  const COLOURS = { intervention: "#b2182b", screening: "#ef8a27", strict_control: "#7b3294",
    safe_utilisation: "#e6c619", priority_protection: "#1a9850", undeterminable: "#8c9aa3" };
  const SYMBOL = { basic: "●", risk: "◆", background: "▲" };
  const layer = L.layerGroup().addTo(map);
  let points = [];
  const f = { metal: document.getElementById("f-metal"), level: document.getElementById("f-level"),
    land: document.getElementById("f-land-use"), type: document.getElementById("f-type") };
  function colour(p) { return COLOURS[p.open_level] || COLOURS[p.tier] || "#8c9aa3"; }
  function shown(p) {
    if (f.metal.value && !p.open_metals.includes(f.metal.value)) return false;
    if (f.level.value === "none" && p.open_level) return false;
    if (f.level.value && f.level.value !== "none" && p.open_level !== f.level.value) return false;
    if (f.land.value && p.land_use !== f.land.value) return false;
    if (f.type.value && p.point_type !== f.type.value) return false;
    return true;
  }
  function popup(p) {
    const div = S.el("div");
    div.appendChild(S.el("strong", p.point_id));
    div.appendChild(S.el("div", p.name));
    div.appendChild(S.el("div", S.t(p.point_type) + " · " + p.land_use + (p.tier ? " · " + S.t(p.tier) : "")));
    const table = S.el("table", null, "list");
    div.appendChild(table);
    S.getJson("/console/data/points/" + encodeURIComponent(p.point_id) + "/latest").then(function (d) {
      for (const s of d.latest) {
        table.appendChild(S.row([s.metal, s.value_mgkg, S.t(s.level),
          (s.screening_mgkg ?? "–") + " / " + (s.intervention_mgkg ?? "–"), S.fmtTime(s.sampled_at)]));
      }
    }).catch(function () {});
    div.appendChild(S.link("/console/points/" + encodeURIComponent(p.point_id), S.t("open_page")));
    return div;
  }
  function draw() {
    layer.clearLayers();
    const tbody = document.querySelector("#map-points tbody");
    tbody.replaceChildren();
    let n = 0;
    for (const p of points) {
      if (!shown(p)) continue;
      n++;
      const icon = L.divIcon({ className: "", iconSize: [18, 18], iconAnchor: [9, 9],
        html: "" });
      const m = L.marker([p.lat, p.lon], { icon: icon, title: p.point_id });
      m.on("add", function () {
        const e = m.getElement();
        if (!e) return;
        e.replaceChildren(S.el("span", SYMBOL[p.point_type] || "●", "pt-label"));
        e.firstChild.style.color = colour(p);
        e.classList.add("pt", "pt-" + p.point_type);
        e.dataset.point = p.point_id;
      });
      m.bindPopup(function () { return popup(p); });
      m.addTo(layer);
      tbody.appendChild(S.row([S.link("/console/points/" + encodeURIComponent(p.point_id), p.point_id), p.name,
        p.county_code, S.t(p.point_type), p.open_level ? S.t(p.open_level) : (p.tier ? S.t(p.tier) : "–")]));
    }
    document.getElementById("map-count").textContent = n + " / " + points.length;
  }
  S.getJson("/console/data/map").then(function (data) {
    points = data;
    const uses = [...new Set(points.map(function (p) { return p.land_use; }))].sort();
    for (const u of uses) { const o = S.el("option", u); o.value = u; f.land.appendChild(o); }
    draw();
    box.dataset.loaded = String(points.length);
  });
  for (const k in f) f[k].addEventListener("change", draw);
})();
