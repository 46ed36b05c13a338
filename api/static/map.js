// The map (issue 22): recolour buildings live. Every alarm change on the stream asks /map/state for the buildings'
// states (one request however many alarms changed at once), and every RECHECK_MS for what the stream does not carry
// (work orders). No framework, no build step, nothing from outside.
(function () {
  "use strict";
  var map = document.getElementById("map");
  if (!map) { return; }
  var live = document.getElementById("live");
  var labels = JSON.parse(map.dataset.labels);
  var STATES = ["sev-critical", "sev-major", "sev-minor", "sev-info", "work-order", "offline", "clear"];
  // The stream carries alarms only: a work order opened or closed on foot shows at the next look, this often.
  var RECHECK_MS = 30000;
  var pending = null;

  function paint(states) {
    document.querySelectorAll("[data-building]").forEach(function (el) {
      var s = states[el.dataset.building];
      if (!s) { return; }
      STATES.forEach(function (c) { el.classList.remove(c); });
      el.classList.add(s.state);
      var label = el.querySelector(".state-label");
      if (label) { label.textContent = labels[s.state] || s.state; }
      var count = el.querySelector("text.b-label");
      if (count) { count.textContent = s.open ? String(s.open) : ""; }
    });
  }

  function refresh() {
    pending = null;
    fetch(map.dataset.state, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (states) { if (states) { paint(states); map.dataset.updated = String(Date.now()); } });
  }

  window.setInterval(function () { if (!pending) { pending = window.setTimeout(refresh, 0); } }, RECHECK_MS);
  var source = new EventSource(map.dataset.stream);
  source.onopen = function () { live.textContent = live.dataset.live; live.classList.remove("down"); };
  source.onerror = function () { live.textContent = live.dataset.offline; live.classList.add("down"); };
  source.addEventListener("alarm", function () { if (!pending) { pending = window.setTimeout(refresh, 200); } });
})();
