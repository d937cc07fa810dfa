// tenure dashboard: live updates from the change stream. No framework, no build step.
// The element #live names its stream (data-watch, which starts where the page was read) and what
// to react to (data-match: "shown" = resources shown on the page, plus new ones on the last page;
// "any" = every change). On a match it fetches the page again and swaps #live's content, debounced.
// Forms marked data-confirm ask first. A page answering a form post names its own address
// (data-page) so that reloading it reads the page instead of posting the form again.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var ask = e.target && e.target.dataset ? e.target.dataset.confirm : null;
    if (ask && !window.confirm(ask)) { e.preventDefault(); }
  });
  var live = document.getElementById("live");
  if (live && live.dataset.page && window.location.pathname !== live.dataset.page && window.history.replaceState) {
    window.history.replaceState(null, "", live.dataset.page);
  }
  var status = document.getElementById("live-status");
  if (!live || !live.dataset.watch || !window.EventSource) { return; }
  var QUIET_MS = 400;      // wait for a burst of changes to settle
  var MIN_GAP_MS = 1500;   // refresh at most this often
  var timer = null, busy = false, again = false, last = 0;

  function say(text, off) {
    if (!status) { return; }
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle("off", !!off);
  }

  function shown(id) {
    return live.querySelector('[data-resource-id="' + CSS.escape(id) + '"]') !== null;
  }

  function matches(change) {
    if (live.dataset.match === "any") { return true; }
    if (shown(change.resourceId)) { return true; }
    return change.event === "@create" && live.dataset.tail === "true";
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    last = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { window.location.reload(); return null; }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (!fresh) { window.location.reload(); return; }
        live.dataset.tail = fresh.dataset.tail || "false";
        live.replaceChildren.apply(live, Array.prototype.map.call(
          Array.prototype.slice.call(fresh.childNodes), function (n) { return document.adoptNode(n); }));
        say("live · updated " + new Date().toLocaleTimeString());
      })
      .catch(function () { say("update failed", true); })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (timer !== null) { clearTimeout(timer); }
    var wait = Math.max(QUIET_MS, MIN_GAP_MS - (Date.now() - last));
    timer = setTimeout(function () { timer = null; refresh(); }, wait);
  }

  var source = new EventSource(live.dataset.watch);
  source.addEventListener("open", function () { say("live"); });
  source.addEventListener("change", function (e) {
    var change;
    try { change = JSON.parse(e.data); } catch (err) { return; }
    if (matches(change)) { schedule(); }
  });
  source.addEventListener("error", function () {
    say(source.readyState === EventSource.CLOSED ? "not live (reload the page)" : "reconnecting…", true);
  });
})();
