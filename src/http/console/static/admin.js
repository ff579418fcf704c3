// The points registry page: drop (or choose) a points CSV; it is posted to
// POST /v1/points/import with the session cookie and its CSRF header. Every bad line is
// listed (line, column, message); nothing is imported unless the whole file is good.
"use strict";
(function () {
  const S = window.soilmon;
  const drop = document.getElementById("points-drop"), input = document.getElementById("points-file");
  const result = document.getElementById("import-result"), table = document.getElementById("import-errors");
  if (!drop || !input) return;
  async function send(file) {
    const r = await fetch("/v1/points/import", {
      method: "POST", credentials: "same-origin", body: file,
      headers: { "Content-Type": "text/csv", "X-CSRF-Token": S.csrf() },
    });
    let body = null;
    try { body = await r.json(); } catch (e) { body = { error: "HTTP " + r.status }; }
    show(r.status, body);
  }
  function show(status, body) {
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    result.hidden = false;
    result.dataset.status = String(status);
    if (status === 200) {
      result.textContent = S.t("imported") + ": " + body.imported;
      table.hidden = true;
      return;
    }
    const errors = body.errors || [];
    result.textContent = "HTTP " + status + (body.error ? " · " + body.error : "") +
      (errors.length ? " · " + S.t("errors") + ": " + errors.length : "");
    for (const e of errors) {
      const tr = S.row([e.line, e.column || "", e.detail]);
      tr.className = "import-error";
      tbody.appendChild(tr);
    }
    table.hidden = errors.length === 0;
  }
  input.addEventListener("change", function () { if (input.files.length) send(input.files[0]); input.value = ""; });
  drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
  drop.addEventListener("drop", function (e) {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
})();
