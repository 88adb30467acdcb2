/* The counter's residents' page and hall display, kept current from /api/v1/stream.

   The page was drawn by the server with the counter's last reading; this only changes the
   numbers when the device reports (a call, a ticket), and on the hall display rings a
   two-tone chime and flashes the window that called someone new. */
(function (global) {
  "use strict";

  global.jisakuCounter = function (config) {
    const words = config.words;
    const hall = document.body.classList.contains("jisaku-hall");
    let shown = null;

    function say(key, values) {
      let text = words[key] || key;
      for (const name in values || {}) text = text.replace("{" + name + "}", values[name]);
      return text;
    }

    function chime() {
      try {
        const audio = new (global.AudioContext || global.webkitAudioContext)();
        [[880, 0], [659, 0.45]].forEach(function (tone) {
          const oscillator = audio.createOscillator();
          const gain = audio.createGain();
          oscillator.frequency.value = tone[0];
          gain.gain.setValueAtTime(0.3, audio.currentTime + tone[1]);
          gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + tone[1] + 0.8);
          oscillator.connect(gain).connect(audio.destination);
          oscillator.start(audio.currentTime + tone[1]);
          oscillator.stop(audio.currentTime + tone[1] + 0.8);
        });
      } catch (err) { /* no sound card: the flash is enough */ }
    }

    function show(feature) {
      const values = feature.properties.values || {};
      let called = false;
      document.querySelectorAll("[data-window]").forEach(function (cell) {
        const number = values["window_" + cell.dataset.window];
        if (number === undefined) return;
        const text = number ? String(number) : say("counter.nobody");
        if (cell.textContent !== text) {
          cell.textContent = text;
          if (number && shown !== null) {
            called = true;
            cell.classList.remove("jisaku-called");
            void cell.offsetWidth;   // restart the flash
            cell.classList.add("jisaku-called");
          }
        }
      });
      // The hall's digits shrink when a number gets longer (999 → 1000), so it never runs off.
      const longest = Math.max(2, ...Array.from(document.querySelectorAll("[data-window]"), c => c.textContent.length));
      document.getElementById("counter-windows").style.setProperty("--digits", longest);
      const waiting = values.waiting;
      if (waiting !== undefined) {
        document.getElementById("counter-waiting").textContent = say("counter.people", {n: waiting});
        document.getElementById("counter-estimate").textContent = waiting === 0 ? say("counter.no_wait")
          : say("counter.minutes", {minutes: Math.max(1, Math.round(values.estimate_min || 0))});
      }
      const updated = document.getElementById("counter-updated");
      if (updated && feature.properties.ts) {
        const when = new Date(feature.properties.ts * 1000).toLocaleTimeString(config.lang,
          {hour: "2-digit", minute: "2-digit"});
        updated.textContent = say("counter.updated", {when: when});
      }
      lastReport = feature.properties.ts;
      streamOk = true;
      showAge();
      if (called && hall) chime();
      shown = values;
    }

    // "Not recent": the counter has not reported for longer than it should (it lost its link,
    // or is switched off), or this page cannot reach the server.
    let lastReport = null, streamOk = true;
    function showAge() {
      const old = lastReport === null || Date.now() / 1000 - lastReport > config.staleAfterS;
      document.getElementById("counter-stale").hidden = streamOk && !old;
    }
    setInterval(showAge, 5000);

    function take(features) {
      features.forEach(function (feature) {
        if (feature.id === config.id) show(feature);
      });
    }

    const stream = new EventSource(config.stream);
    stream.addEventListener("latest", function (event) { take(JSON.parse(event.data).features); });
    stream.addEventListener("changes", function (event) { take(JSON.parse(event.data).features); });
    // The server is out of reach: say the numbers may be old (the browser reconnects by itself).
    stream.onerror = function () { streamOk = false; showAge(); };
  };
})(window);
