// jitgate's page script: keeps live regions and countdowns current. Pages work without it.
(function () {
  "use strict";
  // Live regions: an element with data-live="/path" is replaced every 2 s by the same page's
  // live fragment, unless the user is typing in it.
  function refresh(el) {
    if (el.contains(document.activeElement) && document.activeElement.matches("input, textarea")) return;
    fetch(el.dataset.live, { headers: { "X-Live": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || !r.ok) return null;
        return r.text();
      })
      .then(function (html) {
        if (html !== null && html !== el.dataset.last) {
          el.dataset.last = html;
          el.innerHTML = html;
          tick();
        }
      })
      .catch(function () {});
  }
  // Countdowns: <time class="countdown" datetime="RFC3339">.
  function fmt(ms) {
    if (ms <= 0) return "0s";
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    return (h ? h + "h" : "") + (h || m ? m + "m" : "") + s + "s";
  }
  function tick() {
    document.querySelectorAll("time.countdown").forEach(function (t) {
      t.textContent = fmt(Date.parse(t.getAttribute("datetime")) - Date.now());
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      setInterval(function () { refresh(el); }, 2000);
    });
    setInterval(tick, 1000);
    tick();
  });
})();
