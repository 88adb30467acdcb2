/* A shelter's tally on a phone: "+1" when someone comes in, "−1" when someone leaves.

   The count lives on this phone (localStorage) like on the Pi tally (kinds/shelter/pi.py),
   and every tap sends the new count as a reading {count, capacity, open}: sent in order by
   DeviceOutbox, kept when there is no signal. A reading sent twice is stored once, and a
   count is a total, never a difference, so nothing is ever counted twice.
   The first time, the count starts from what the server last heard from this shelter. */
(function (global) {
  "use strict";

  global.shelterTally = function (config) {
    const words = config.words;
    const countName = "jisaku.tally." + config.id;

    jisakuStaff(config, function (device, outbox, refresh) {
      let settings = device.settings || {};
      let saved = JSON.parse(localStorage.getItem(countName) || "null");
      let count = saved ? saved.count : (device.values.count || 0);

      const shown = document.getElementById("tally-count");
      const capacity = document.getElementById("tally-capacity");
      const closed = document.getElementById("tally-closed");
      document.getElementById("staff-name").textContent =
        (config.lang === "ja" && device.name_ja) || device.name || device.id;

      function isOpen() {
        return settings.open === undefined ? true : settings.open === 1;
      }

      function show() {
        shown.textContent = count.toLocaleString(config.lang);
        capacity.textContent = settings.capacity
          ? words["staff.shelter.capacity"].replace("{capacity}", settings.capacity.toLocaleString(config.lang)) : "";
        closed.hidden = isOpen();
      }

      function tap(delta) {
        const next = Math.max(0, count + delta);
        if (next === count) return;   // "−1" at 0: nobody to let out
        count = next;
        localStorage.setItem(countName, JSON.stringify({count: count}));
        const values = {count: count};
        if (settings.capacity !== undefined) values.capacity = settings.capacity;
        values.open = isOpen() ? 1 : 0;
        outbox.reading(values);
        show();
      }

      document.getElementById("tally-in").addEventListener("click", () => tap(1));
      document.getElementById("tally-out").addEventListener("click", () => tap(-1));
      show();
      // Headquarters may open or close the shelter, or change its capacity, meanwhile.
      setInterval(async function () {
        const fresh = await refresh();
        if (fresh) { settings = fresh.settings || {}; show(); }
      }, 30000);
    });
  };
})(window);
