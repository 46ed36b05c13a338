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

  function place(msg) {
    var old = document.getElementById("alarm-" + msg.id);
    if (!msg.open) {
      if (old) { old.remove(); }
    } else if (old) {
      old.outerHTML = msg.html;
    } else {
      list.insertAdjacentHTML("afterbegin", msg.html);
    }
    refreshEmpty();
  }

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
