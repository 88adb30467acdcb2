// Charts of a device's numbers on its operator page (practice devices: residents' charts do not
// show them). One uPlot chart per metric from /api/v1/operator/devices/<id>/history, the last 24 h.
"use strict";

function jisakuPracticeCharts(box, deviceId, metrics, words) {
  metrics.forEach(function (metric) {
    var part = document.createElement("figure"), note = document.createElement("figcaption");
    note.textContent = metric;
    part.appendChild(note);
    box.appendChild(part);
    fetch("/api/v1/operator/devices/" + encodeURIComponent(deviceId) + "/history?range=24h&metric=" +
          encodeURIComponent(metric), { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (history) {
        var b = history.buckets || [];
        if (!b.length) { note.textContent = metric + ": " + words.none; return; }
        var lo = Math.min.apply(null, b.map(function (x) { return x.min; }));
        var hi = Math.max.apply(null, b.map(function (x) { return x.max; }));
        note.textContent = metric + ": " + lo + " – " + hi;
        if (!window.uPlot) return;
        new uPlot({ width: Math.max(280, Math.min(720, box.clientWidth)), height: 180, legend: { show: false },
                    series: [{}, { stroke: "#1d3557", width: 2, points: { show: b.length < 30 } }],
                    scales: { x: { time: true } } },
                  [b.map(function (x) { return x.ts; }), b.map(function (x) { return x.avg; })], part);
      })
      .catch(function () { note.textContent = metric + ": " + words.none; });
  });
}
