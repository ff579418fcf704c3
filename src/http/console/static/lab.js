// The lab upload page: drag and drop (or choose) a CSV, JSON or xlsx file; it is posted to
// POST /v1/lab/batches with the session cookie and its CSRF header, with a progress bar;
// the report is shown as a table (line, column, code, message) with a code filter, and the
// errors can be saved as CSV.
"use strict";
(function () {
  const S = window.soilmon;
  const drop = document.getElementById("drop"), input = document.getElementById("file");
  const bar = document.getElementById("progress"), barText = document.getElementById("progress-text");
  const filter = document.getElementById("code-filter");
  let report = null;
  const TYPES = { csv: "text/csv", tsv: "text/tab-separated-values", json: "application/json",
    xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" };
  function typeOf(file) {
    const ext = (file.name.split(".").pop() || "").toLowerCase();
    return TYPES[ext] || file.type || "text/csv";
  }
  function send(file) {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/lab/batches");
    xhr.setRequestHeader("Content-Type", typeOf(file));
    xhr.setRequestHeader("X-CSRF-Token", S.csrf());
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); barText.textContent = bar.value + " %"; }
    };
    xhr.onload = function () {
      bar.value = 100; barText.textContent = "100 % · HTTP " + xhr.status;
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = { error: xhr.responseText }; }
      show(xhr.status, body);
    };
    xhr.onerror = function () { barText.textContent = "network error"; };
    bar.value = 0; barText.textContent = "0 %";
    xhr.send(file);
  }
  function show(status, body) {
    report = body;
    document.getElementById("report").hidden = false;
    const ok = status === 200 || status === 201;
    const verdict = document.getElementById("verdict");
    verdict.textContent = ok ? S.t("accepted") : S.t("rejected");
    verdict.className = ok ? "st-accepted" : "st-rejected";
    verdict.dataset.status = String(status);
    document.getElementById("report-batch").textContent = body.batch_id || "";
    document.getElementById("report-summary").textContent = body.error
      ? body.error : (S.t("rows") + " " + (body.rows ?? 0) + " · " + S.t("errors") + " " + (body.error_count ?? 0));
    const codes = [...new Set((body.errors || []).map(function (e) { return e.code; }))].sort();
    filter.replaceChildren(S.el("option", S.t("all")));
    filter.firstChild.value = "";
    for (const c of codes) { const o = S.el("option", c); o.value = c; filter.appendChild(o); }
    table();
  }
  function table() {
    const tbody = document.querySelector("#errors tbody");
    tbody.replaceChildren();
    for (const e of (report && report.errors) || []) {
      if (filter.value && e.code !== filter.value) continue;
      const tr = S.row([e.line ?? "", e.column ?? "", e.code, e.detail]);
      tr.className = "error-row";
      tbody.appendChild(tr);
    }
  }
  function csvCell(v) {
    const s = String(v ?? "");
    return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  document.getElementById("errors-csv").addEventListener("click", function () {
    const lines = ["line,column,code,message"];
    for (const e of (report && report.errors) || []) lines.push([e.line, e.column, e.code, e.detail].map(csvCell).join(","));
    const blob = new Blob(["\ufeff" + lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = (report && report.batch_id ? report.batch_id : "batch") + "-errors.csv";
    document.body.appendChild(a); a.click(); a.remove();
  });
  filter.addEventListener("change", table);
  input.addEventListener("change", function () { if (input.files[0]) send(input.files[0]); });
  drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
  drop.addEventListener("drop", function (e) {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
  });
})();
