// soilmon console: helpers shared by the page scripts. No inline scripts anywhere (the
// Content-Security-Policy forbids them); every text from the server is put in the page with
// textContent, never as HTML.
"use strict";
window.soilmon = (function () {
  const body = document.body;
  let texts = {};
  try { texts = JSON.parse(body.dataset.i18n || "{}"); } catch (e) { texts = {}; }
  function t(key) { return texts[key] || key; }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      if (c instanceof Node) { const td = document.createElement("td"); td.appendChild(c); tr.appendChild(td); }
      else tr.appendChild(el("td", c));
    }
    return tr;
  }
  function link(href, text) { const a = el("a", text); a.href = href; return a; }
  async function getJson(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }
  function csrf() { return body.dataset.csrf || ""; }
  function fmtTime(s) { return s ? String(s).replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : ""; }
  return { t, el, row, link, getJson, csrf, fmtTime };
})();
