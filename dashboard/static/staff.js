/* What every staff page that acts as a device shares: logging in with the device's secret,
   what the server knows of the device, and a line that says whether everything was sent.

   The secret comes once in the link the operator hands out (…/staff#key=SECRET: the part
   after # never reaches the server or its logs), is kept in this browser's localStorage,
   and is taken out of the address bar at once so it is not shown or bookmarked.

   Example (a page's own script):
     jisakuStaff(config, function (device, outbox) { ... outbox.reading({count: 1}); });
   device: {id, kind, name, name_ja, settings, values, ts} from GET /api/v1/devices/{id}/self. */
(function (global) {
  "use strict";

  function jisakuStaff(config, start) {
    const words = config.words;
    const keyName = "jisaku.key." + config.id;
    const selfName = "jisaku.self." + config.id;
    const status = document.getElementById("staff-status");
    const loginForm = document.getElementById("staff-login");
    const desk = document.getElementById("staff-desk");
    let outbox = null;
    let started = false;

    const fromLink = new URLSearchParams(location.hash.slice(1)).get("key");
    if (fromLink) {
      localStorage.setItem(keyName, fromLink);
      history.replaceState(null, "", location.pathname + location.search);
    }

    function say(word, n) {
      return (words[word] || word).replace("{n}", n);
    }

    function showState(change) {
      let text = say("staff.state." + change.state, change.pending);
      if (change.refused) text += " · " + say("staff.state.refused", change.refused);
      status.textContent = text;
      status.dataset.state = change.state;
      status.dataset.pending = change.pending;
      if (change.state === "login") askForSecret(false);
    }

    function askForSecret(wrong) {
      loginForm.hidden = false;
      document.getElementById("staff-login-wrong").hidden = !wrong;
    }

    async function whoAmI(secret) {
      const answer = await fetch("/api/v1/devices/" + encodeURIComponent(config.id) + "/self", {
        headers: {authorization: "Basic " + btoa(config.id + ":" + secret)}, cache: "no-store"});
      if (answer.status === 401) return null;
      if (!answer.ok) throw new Error("HTTP " + answer.status);
      const device = await answer.json();
      localStorage.setItem(selfName, JSON.stringify(device));
      return device;
    }

    async function begin(secret) {
      let device;
      try {
        device = await whoAmI(secret);
        if (device === null) {
          localStorage.removeItem(keyName);
          return askForSecret(true);
        }
      } catch (err) {
        // No signal: what the server said last time is good enough to go on counting.
        device = JSON.parse(localStorage.getItem(selfName) || "null");
        if (!device) {
          status.textContent = say("staff.state.waiting", 0);
          return setTimeout(() => begin(secret), 3000);
        }
      }
      loginForm.hidden = true;
      if (outbox) return outbox.login(secret);
      outbox = new DeviceOutbox(config.id, secret, {onChange: showState});
      desk.hidden = false;
      if (!started) {
        started = true;
        start(device, outbox, function refresh() {
          return whoAmI(localStorage.getItem(keyName) || "").catch(() => null);
        });
      }
    }

    loginForm.addEventListener("submit", function (event) {
      event.preventDefault();
      const secret = document.getElementById("staff-secret").value.trim();
      localStorage.setItem(keyName, secret);
      begin(secret);
    });

    const secret = localStorage.getItem(keyName);
    if (secret) begin(secret); else askForSecret(false);
  }

  global.jisakuStaff = jisakuStaff;
})(window);
