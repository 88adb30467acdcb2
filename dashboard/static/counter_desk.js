/* The resident counter on a tablet: take a ticket, call the next person, call again.

   For a town with no buttons yet. The queue (static/ticket_queue.js, the same logic as the
   Pi's kinds/counter/queue.py) lives in this browser's localStorage, so numbers are issued
   and called with no server at all; every ticket and call is also sent as the counter's
   events and readings through DeviceOutbox, in order, when the link allows. */
(function (global) {
  "use strict";

  global.counterDesk = function (config) {
    const words = config.words;
    const queueName = "jisaku.counter." + config.id;

    function say(key, values) {
      let text = words[key] || key;
      for (const name in values || {}) text = text.replace("{" + name + "}", values[name]);
      return text;
    }

    jisakuStaff(config, function (device, outbox) {
      const saved = JSON.parse(localStorage.getItem(queueName) || "null");
      const settings = device.settings || {};
      const queue = saved ? TicketQueue.fromJSON(saved)
        : new TicketQueue({windows: device.values.windows || 2, minutes_per_person: settings.minutes_per_person || 5});
      document.getElementById("staff-name").textContent =
        (config.lang === "ja" && device.name_ja) || device.name || device.id;

      const windowsBox = document.getElementById("desk-windows");
      for (let n = 1; n <= queue.windows; n++) {
        const box = document.createElement("section");
        box.className = "jisaku-desk-window";
        box.innerHTML = "<h2>" + say("staff.counter.window", {n: n}) + "</h2>" +
          '<p class="jisaku-desk-serving"><span>' + say("staff.counter.serving") + '</span> <strong data-window="' + n + '"></strong></p>' +
          '<button type="button" class="jisaku-desk-button jisaku-desk-next" data-next="' + n + '">' + say("staff.counter.next") + "</button>" +
          '<button type="button" class="jisaku-desk-again" data-again="' + n + '">' + say("staff.counter.again") + "</button>";
        windowsBox.appendChild(box);
      }

      function now() { return Date.now() / 1000; }

      // Kept first, sent second: a reload or a dead battery loses no ticket.
      function keep() {
        localStorage.setItem(queueName, JSON.stringify(queue));
        outbox.reading(queue.state(now()));
        show();
      }

      function show() {
        const state = queue.state(now());
        document.querySelectorAll("[data-window]").forEach(function (cell) {
          const number = state["window_" + cell.dataset.window];
          cell.textContent = number ? String(number) : say("staff.counter.none");
        });
        document.getElementById("desk-waiting").textContent = say("staff.counter.waiting", {n: state.waiting});
        document.getElementById("desk-estimate").textContent =
          say("staff.counter.estimate", {minutes: Math.round(state.estimate_min)});
      }

      document.getElementById("desk-take").addEventListener("click", function () {
        const ticket = queue.take(now());
        outbox.event("ticket", {number: ticket.number, estimate_min: ticket.estimate_min, waiting: ticket.waiting_before + 1});
        document.getElementById("desk-taken").textContent = say("staff.counter.taken", {number: ticket.number});
        keep();
      });
      windowsBox.addEventListener("click", function (event) {
        const next = event.target.dataset.next, again = event.target.dataset.again;
        if (next) {
          if (queue.callNext(Number(next), now()) !== null) outbox.event("call", queue.last_call);
          keep();
        } else if (again) {
          const number = queue.callAgain(Number(again), now());
          if (number !== null) outbox.event("call_again", {number: number, window: Number(again)});
        }
      });
      show();
      setInterval(show, 30000);  // the estimate changes as time passes
    });
  };
})(window);
