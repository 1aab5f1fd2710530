// reauthd recipient page: live status, countdowns and the copy button. No inline script (strict CSP);
// without JavaScript every page still works by reloading it.
(function () {
  "use strict";
  var body = document.body;
  var statusUrl = body.getAttribute("data-status-url");
  var hints = document.querySelectorAll(".noscript-hint");
  for (var i = 0; i < hints.length; i++) { hints[i].hidden = true; }

  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function format(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    return h ? h + ":" + pad(m) + ":" + pad(s) : m + ":" + pad(s);
  }

  var countdowns = document.querySelectorAll(".countdown[data-seconds]");
  var deadline = null;
  if (countdowns.length) {
    deadline = Date.now() + 1000 * parseInt(countdowns[0].getAttribute("data-seconds"), 10);
    var tick = function () {
      var left = (deadline - Date.now()) / 1000;
      for (var j = 0; j < countdowns.length; j++) { countdowns[j].textContent = format(left); }
      if (left <= 0) { window.location.reload(); return; }
      window.setTimeout(tick, 1000);
    };
    tick();
  }

  var copies = document.querySelectorAll("button[data-copy]");
  for (var k = 0; k < copies.length; k++) {
    copies[k].addEventListener("click", function (event) {
      var button = event.currentTarget;
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (!target) { return; }
      var text = target.textContent.trim();
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
      } else { selectText(target); }
    });
  }
  function selectText(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // "Paste and send": reads the clipboard where the browser allows it and sends the form in one tap. The
  // plain field and Send stay for browsers that refuse (or ask and are told no).
  var pasters = document.querySelectorAll("button[data-paste]");
  var canRead = !!(navigator.clipboard && navigator.clipboard.readText);
  for (var p = 0; p < pasters.length; p++) {
    if (!canRead) { continue; }
    pasters[p].hidden = false;
    var sendButton = pasters[p].form && pasters[p].form.querySelector("button.send");
    if (sendButton) { sendButton.classList.remove("primary"); }
    pasters[p].addEventListener("click", function (event) {
      var button = event.currentTarget;
      var form = button.form;
      var field = document.getElementById(button.getAttribute("data-paste"));
      var problem = form.querySelector(".paste-problem");
      var say = function (sentence) {
        if (problem) { problem.textContent = sentence; problem.hidden = false; }
        if (field) { field.focus(); }
      };
      navigator.clipboard.readText().then(function (text) {
        text = (text || "").trim();
        if (!/^https?:\/\//i.test(text)) {
          say("The clipboard holds no web address. Copy the whole address from the other tab, then try again.");
          return;
        }
        field.value = text;
        button.disabled = true;
        form.submit();
      }, function () {
        say("This browser does not let the page read the clipboard: paste the address into the field below and press Send.");
        // From now on the field and Send are the way: Send becomes the main button again.
        button.classList.remove("primary");
        var send = form.querySelector("button.send");
        if (send) { send.classList.add("primary"); }
      });
    });
  }

  // Start login for a sign-in that ends in a pasted address: open the provider's sign-in in a new tab in the
  // same tap. The tab is opened at once (a browser allows a new tab only during the click), then sent to
  // the sign-in once the login exists. Anything unexpected falls back to the plain form post.
  var starts = document.querySelectorAll("form[data-open-signin]");
  for (var q = 0; q < starts.length; q++) {
    starts[q].addEventListener("submit", function (event) {
      var form = event.currentTarget;
      if (form.getAttribute("data-posting") || !window.fetch || !window.URLSearchParams) { return; }
      event.preventDefault();
      form.setAttribute("data-posting", "1");
      var tab = window.open("", "_blank");
      if (tab) { tab.opener = null; }
      var fallback = function () {
        if (tab) { tab.close(); }
        form.submit();
      };
      fetch(form.action, {
        method: "POST", credentials: "same-origin", redirect: "follow",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(form)).toString()
      }).then(function (response) {
        if (!response.ok || !response.redirected) { fallback(); return; }
        if (tab) { tab.location.href = new URL(form.getAttribute("data-open-signin"), window.location.href).href; }
        window.location.href = response.url;
      }).catch(fallback);
    });
  }

  // The operator view's sign-in link from `reauthd demo`: /operator/login#token=… fills the form and signs in.
  // The fragment never reaches the server or a log; it is removed from the address bar at once.
  var tokenField = document.getElementById("token");
  if (tokenField && window.location.hash.indexOf("#token=") === 0) {
    tokenField.value = decodeURIComponent(window.location.hash.slice(7));
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    if (tokenField.value && tokenField.form) { tokenField.form.submit(); }
  }

  function renderSteps(steps) {
    var list = document.getElementById("progress");
    if (!list) { return; }
    while (list.firstChild) { list.removeChild(list.firstChild); }
    steps.forEach(function (step) {
      var item = document.createElement("li");
      item.className = "step " + step.status;
      item.textContent = step.label;
      list.appendChild(item);
    });
  }

  if (!statusUrl) { return; }
  var poll = function () {
    fetch(statusUrl, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (status) {
        if (!status) { window.setTimeout(poll, 5000); return; }
        if (status.phase !== body.getAttribute("data-phase") || status.state !== body.getAttribute("data-state")) {
          window.location.reload();
          return;
        }
        var headline = document.getElementById("headline");
        var detail = document.getElementById("detail");
        if (headline) { headline.textContent = status.headline; }
        if (detail) { detail.textContent = status.detail; }
        renderSteps(status.steps || []);
        if (typeof status.seconds_left === "number" && countdowns.length) {
          deadline = Date.now() + 1000 * status.seconds_left;
        }
        if (!status.terminal) { window.setTimeout(poll, 2000); }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  };
  window.setTimeout(poll, 2000);
})();
