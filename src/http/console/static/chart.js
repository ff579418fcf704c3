// The time-series chart of a point × metal (Apache ECharts): values over time with the
// screening and intervention lines, and the samples that opened / escalated / cleared the
// incident marked. Data from /console/data/points/{id}/series?metal=….
"use strict";
(function () {
  const S = window.soilmon;
  const box = document.getElementById("chart");
  if (!box || !window.echarts) return;
  const chart = echarts.init(box);
  let events = [];
  try { events = JSON.parse(box.dataset.events || "[]"); } catch (e) { events = []; }
  function lines(rows) {
    const last = rows[rows.length - 1] || {};
    const sc = parseFloat(box.dataset.screening) || last.screening_mgkg;
    const iv = parseFloat(box.dataset.intervention) || last.intervention_mgkg;
    const l = [];
    if (sc) l.push({ yAxis: sc, name: S.t("screening_value"), lineStyle: { color: "#ef8a27" }, label: { formatter: S.t("screening_value") + " {c}" } });
    if (iv) l.push({ yAxis: iv, name: S.t("intervention_value"), lineStyle: { color: "#b2182b" }, label: { formatter: S.t("intervention_value") + " {c}" } });
    return l;
  }
  async function load(metal) {
    const rows = await S.getJson("/console/data/points/" + encodeURIComponent(box.dataset.point) +
      "/series?metal=" + encodeURIComponent(metal));
    const marks = events.filter(function (e) { return e.metal === metal; }).map(function (e) {
      return { coord: [e.sampled_at, e.value_mgkg], value: S.t(e.state) };
    });
    chart.setOption({
      animation: false,
      title: { text: box.dataset.point + " · " + metal + " (mg/kg)", textStyle: { fontSize: 13 } },
      tooltip: { trigger: "axis" },
      xAxis: { type: "time" },
      // The axis reaches the intervention line too, so both lines are always in view.
      yAxis: { type: "value", name: "mg/kg", max: function (v) {
        const top = Math.max(v.max, ...lines(rows).map(function (l) { return l.yAxis; }));
        return Math.ceil(top * 1.15 * 100) / 100;
      } },
      series: [{ type: "line", name: metal, showSymbol: true,
        data: rows.map(function (r) { return [r.sampled_at, r.value_mgkg]; }),
        markLine: { symbol: "none", data: lines(rows) },
        markPoint: { symbolSize: 36, data: marks } }]
    }, true);
    box.dataset.samples = String(rows.length);
  }
  const pick = document.getElementById("f-metal");
  if (pick && pick.tagName === "SELECT" && pick.options.length) {
    pick.addEventListener("change", function () { load(pick.value); });
  }
  if (box.dataset.metal) load(box.dataset.metal);
  window.addEventListener("resize", function () { chart.resize(); });
})();
