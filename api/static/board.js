// Worker board: live rows over Server-Sent Events, one-tap acknowledge/resolve without reloading.
// No framework, no build step. The server renders every row; this only places it.
(function () {
  "use strict";
  var list = document.getElementById("alarms");
  if (!list) { return; }
  var csrf = document.querySelector("meta[name=csrf]").content;
  var live = document.getElementById("live");
  var empty = document.getElementById("empty");

  function refreshEmpty() { empty.hidden = list.children.length > 0; }

  // The server ranks every row (escalated to you first, then the longest waiting); keep live rows in that order.
  function sortRows() {
    var rows = Array.prototype.slice.call(list.children);
    rows.sort(function (a, b) { return (a.dataset.rank || "").localeCompare(b.dataset.rank || ""); });
    rows.forEach(function (row) { list.appendChild(row); });
  }

  function place(msg) {
    var old = document.getElementById("alarm-" + msg.id);
    if (!msg.open) {
      if (old) { old.remove(); }
    } else if (old) {
      old.outerHTML = msg.html;
    } else {
      list.insertAdjacentHTML("afterbegin", msg.html);
    }
    sortRows();
    refreshEmpty();
  }

  // How long each alarm has waited, kept current between server updates (same units as the server's).
  function secs(s) {
    if (s < 120) { return Math.round(s) + " s"; }
    if (s < 7200) { return (s / 60).toFixed(1) + " min"; }
    return (s / 3600).toFixed(1) + " h";
  }
  function tick() {
    var now = Date.now();
    list.querySelectorAll(".waited[data-since]").forEach(function (el) {
      el.textContent = list.dataset.waiting + " " + secs(Math.max(0, now - Number(el.dataset.since)) / 1000);
    });
  }
  window.setInterval(tick, 15000);

  var source = new EventSource(list.dataset.stream);
  source.onopen = function () { live.textContent = live.dataset.live; live.classList.remove("down"); };
  source.onerror = function () { live.textContent = live.dataset.offline; live.classList.add("down"); };
  source.addEventListener("alarm", function (ev) { place(JSON.parse(ev.data)); });

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.hasAttribute("data-inline")) { return; }
    ev.preventDefault();
    var data = new FormData(form, ev.submitter);
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(form.action, {
      method: "POST", credentials: "same-origin", body: new URLSearchParams(data),
      headers: { "X-Requested-With": "fetch", "X-CSRF-Token": csrf }
    }).then(function (r) {
      if (!r.ok) { return r.text().then(function (t) { throw new Error(r.status + " " + t); }); }
      return r.json();
    }).then(place).catch(function (err) {
      buttons.forEach(function (b) { b.disabled = false; });
      window.alert(err.message);
    });
  });
})();
