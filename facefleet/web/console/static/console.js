// facefleet console: keyboard shortcuts on the review page and the "new person" hint.
(function () {
  "use strict";
  function cards() { return Array.prototype.slice.call(document.querySelectorAll("article.cluster:not(.done)")); }
  var current = 0;
  function focusCard(i) {
    var list = cards();
    if (!list.length) { return; }
    current = Math.max(0, Math.min(i, list.length - 1));
    list.forEach(function (c) { c.classList.remove("current"); });
    list[current].classList.add("current");
    list[current].scrollIntoView({ block: "nearest" });
  }
  function card() { var list = cards(); return list[Math.min(current, list.length - 1)]; }
  function typing(e) { var t = e.target; return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA"); }
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && typing(e)) { e.target.blur(); return; }
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) { return; }
    var c = card();
    if (!c) { return; }
    if (e.key === "j") { focusCard(current + 1); }
    else if (e.key === "k") { focusCard(current - 1); }
    else if (e.key === "n" || e.key === "x") {
      var input = c.querySelector("input.name");
      input.dataset.action = e.key === "x" ? "not" : "name";
      input.placeholder = e.key === "x" ? "not this person: name, then Enter" : "name (existing or new)";
      input.focus();
    } else if (e.key === "d") { c.querySelector(".discard-btn").click(); }
    else if (/^[1-9]$/.test(e.key)) {
      var box = c.querySelectorAll("input.pick")[parseInt(e.key, 10) - 1];
      if (box) { box.checked = !box.checked; }
    } else { return; }
    e.preventDefault();
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.key === "Enter" && t.classList && t.classList.contains("name") && t.dataset.action === "not") {
      e.preventDefault();
      t.closest("form").querySelector(".not-btn").click();
    }
  });
  document.addEventListener("input", function (e) {
    var t = e.target;
    if (!t.classList || !t.classList.contains("name")) { return; }
    var names = Array.prototype.map.call(document.querySelectorAll("#people option"), function (o) { return o.value; });
    var hint = t.parentNode.querySelector(".newhint");
    if (hint) { hint.hidden = !t.value.trim() || names.indexOf(t.value.trim()) >= 0; }
  });
  // a refused action (400/403/422) shows its one-line reason on the card it came from
  document.addEventListener("htmx:responseError", function (e) {
    var where = e.detail.elt.closest("article") || document.querySelector("main");
    var box = where.querySelector(".flash.error.action-error");
    if (!box) {
      box = document.createElement("p");
      box.className = "flash error action-error";
      box.setAttribute("role", "alert");
      where.insertBefore(box, where.firstChild);
    }
    // parsed inertly (no scripts, no image loads), shown as text
    var doc = new DOMParser().parseFromString(e.detail.xhr.responseText || "", "text/html");
    box.textContent = (doc.body.textContent || "").trim() || ("request failed (" + e.detail.xhr.status + ")");
  });
  document.addEventListener("DOMContentLoaded", function () { focusCard(0); });
  document.addEventListener("htmx:afterSwap", function () { focusCard(current); });
})();
