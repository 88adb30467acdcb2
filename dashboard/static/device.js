// One device's page: charts of its numbers (uPlot) and, for a vehicle, the route it drove.
// The server sends ready-made buckets (/api/v1/devices/<id>/history: min, avg, max), so a
// week of readings once a second is still only a few hundred points here.
"use strict";

function jisakuDevice(config) {
  var words = config.words, lang = config.lang;
  JISAKU_KINDS = config.kinds;
  var number = new Intl.NumberFormat(lang, { maximumFractionDigits: 1 });
  var charts = document.getElementById("jisaku-charts");
  var range = "24h", drawn = [], trackMap = null, trackLine = null;

  function w(key, values) { return jisakuWord(words, key, values); }
  function metricName(metric) { return config.metricNames[metric] || metric; }
  function periodName() { return w(range === "24h" ? "device.last_24h" : "device.last_7d"); }

  function axisDates(u, ticks) {
    var format = range === "24h" ? { hour: "numeric", minute: "2-digit" } : { month: "numeric", day: "numeric" };
    var f = new Intl.DateTimeFormat(lang, format);
    return ticks.map(function (t) { return f.format(new Date(t * 1000)); });
  }

  function chart(metric, history) {
    var box = document.createElement("section");
    box.className = "jisaku-chart";
    box.dataset.metric = metric;
    var title = document.createElement("h2");
    title.textContent = w("device.chart_title", { metric: metricName(metric), period: periodName() });
    box.appendChild(title);
    var note = document.createElement("p");  // the same in words, for screen readers and a quick look
    box.appendChild(note);
    charts.appendChild(box);
    var b = history.buckets;
    if (!b.length) { note.textContent = w("device.no_data"); return; }
    var lo = Math.min.apply(null, b.map(function (x) { return x.min; }));
    var hi = Math.max.apply(null, b.map(function (x) { return x.max; }));
    var avg = b.reduce(function (s, x) { return s + x.avg * x.n; }, 0) / b.reduce(function (s, x) { return s + x.n; }, 0);
    note.textContent = w("device.range", { min: number.format(lo), max: number.format(hi), avg: number.format(avg) });
    if (!window.uPlot) { note.textContent += " " + w("device.charts_missing"); return; }
    var colour = jisakuKind(config.kind).colour;
    var series = [{}, { label: w("device.band"), stroke: "transparent", points: { show: false } },
      { label: w("device.average"), stroke: colour, width: 2, points: { show: false } },
      { label: w("device.band"), stroke: "transparent", points: { show: false } }];
    var options = {
      width: Math.max(280, charts.clientWidth), height: 200, series: series, legend: { show: false },
      bands: [{ series: [3, 1], fill: colour + "33" }],
      axes: [{ values: axisDates }, { values: function (u, ticks) { return ticks.map(number.format); }, size: 48 }],
      scales: { x: { time: true, range: [history.start, history.end] } }
    };
    if (config.levels && metric === config.levels.metric) {  // the levels (snow: warn, alert) as faint lines
      options.hooks = { draw: [function (u) {
        config.levels.values.forEach(function (cm, i) {
          var y = u.valToPos(cm, "y", true);
          if (y < u.bbox.top || y > u.bbox.top + u.bbox.height) return;
          u.ctx.save(); u.ctx.strokeStyle = i ? "#c62828" : "#ef6c00"; u.ctx.setLineDash([6, 4]);
          u.ctx.beginPath(); u.ctx.moveTo(u.bbox.left, y); u.ctx.lineTo(u.bbox.left + u.bbox.width, y); u.ctx.stroke();
          u.ctx.restore();
        });
      }] };
    }
    var data = [b.map(function (x) { return x.ts; }), b.map(function (x) { return x.min; }),
      b.map(function (x) { return x.avg; }), b.map(function (x) { return x.max; })];
    var plot = new uPlot(options, data, box);
    plot.root.setAttribute("aria-hidden", "true");  // the sentence above says it in words
    drawn.push(plot);
  }

  function drawCharts() {
    drawn.forEach(function (plot) { plot.destroy(); });
    drawn = [];
    charts.innerHTML = "";
    return Promise.all(config.metrics.map(function (metric) {
      return fetch((config.api || "/api/v1") + "/devices/" + encodeURIComponent(config.id) + "/history?metric=" +
                   encodeURIComponent(metric) + "&range=" + range).then(function (r) { return r.json(); });
    })).then(function (histories) {
      histories.forEach(function (history, i) { chart(config.metrics[i], history); });
    });
  }

  function drawTrack() {
    var element = document.getElementById("jisaku-track-map");
    if (!element || !window.L) return Promise.resolve();
    if (!trackMap) {
      trackMap = L.map(element, { zoomControl: false });
      L.control.zoom({ position: "bottomright" }).addTo(trackMap);
      if (!config.tiles.pmtiles) {
        L.tileLayer(config.tiles.url, { attribution: config.tiles.attribution, maxZoom: config.tiles.maxZoom }).addTo(trackMap);
      }
      jisakuBaseMap(trackMap, config.tiles, config.pmtilesScript);
      if (config.position) {
        L.marker(config.position, { icon: L.divIcon({ className: "jisaku-marker",
          html: '<span class="jisaku-badge" style="background:' + jisakuKind(config.kind).colour + '">' +
            jisakuSvg(config.kind, 26) + "</span>", iconSize: [44, 44], iconAnchor: [22, 22] }) }).addTo(trackMap);
        trackMap.setView(config.position, 15);
      }
    }
    return fetch((config.api || "/api/v1") + "/devices/" + encodeURIComponent(config.id) + "/track?range=" + range)
      .then(function (r) { return r.json(); })
      .then(function (track) {
        var points = track.points.map(function (p) { return [p.lat, p.lon]; });
        if (trackLine) trackMap.removeLayer(trackLine);
        trackLine = L.polyline(points, { color: jisakuKind(config.kind).colour, weight: 4, opacity: 0.8 }).addTo(trackMap);
        if (points.length > 1) trackMap.fitBounds(trackLine.getBounds(), { padding: [16, 16] });
        document.getElementById("jisaku-track-note").textContent =
          points.length ? w("device.track_points", { n: number.format(points.length) }) : w("device.no_data");
        element.dataset.points = points.length;
      });
  }

  // A camera: the last 24 hours of pictures as a strip of thumbnails; tap one, or play them in turn.
  function drawPictures() {
    var strip = document.getElementById("jisaku-strip");
    if (!config.pictures || !strip) return Promise.resolve();
    var big = document.getElementById("jisaku-picture"), when = document.getElementById("jisaku-picture-when");
    var play = document.getElementById("jisaku-play"), timer = null;
    var format = new Intl.DateTimeFormat(lang, { hour: "numeric", minute: "2-digit" });
    return fetch(config.pictures + "?since=" + (Date.now() / 1000 - 86400) + "&limit=300")
      .then(function (r) { return r.json(); })
      .then(function (pictures) {
        pictures.reverse();  // oldest first, as time goes
        strip.innerHTML = "";
        if (!pictures.length) { when.textContent = w("picture.none"); return; }
        function show(i) {
          big.src = pictures[i].url;
          when.textContent = w("picture.shown", { when: format.format(new Date(pictures[i].ts * 1000)),
                                                  n: i + 1, total: pictures.length });
          strip.querySelectorAll("button").forEach(function (b, j) { b.setAttribute("aria-current", j === i); });
          strip.dataset.shown = i;
        }
        pictures.forEach(function (picture, i) {
          var button = document.createElement("button");
          button.type = "button";
          button.innerHTML = '<img loading="lazy" alt="' + jisakuEscape(format.format(new Date(picture.ts * 1000))) +
            '" src="' + jisakuEscape(picture.thumbnail) + '">';
          button.addEventListener("click", function () { show(i); });
          strip.appendChild(button);
        });
        show(pictures.length - 1);  // the newest, which may be newer than the page
        play.hidden = pictures.length < 2;
        play.addEventListener("click", function () {
          if (timer) { clearInterval(timer); timer = null; play.textContent = w("picture.play"); return; }
          var i = 0;
          show(i);
          play.textContent = w("picture.pause");
          timer = setInterval(function () {
            i += 1;
            if (i >= pictures.length) { clearInterval(timer); timer = null; play.textContent = w("picture.play"); return; }
            show(i);
          }, 600);
        });
      });
  }

  function draw() {
    return Promise.all([drawCharts(), drawTrack()]).then(function () { document.body.dataset.drawn = range; });
  }
  drawPictures();

  document.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      range = button.dataset.range;
      document.querySelectorAll("[data-range]").forEach(function (b) {
        b.setAttribute("aria-pressed", b === button ? "true" : "false");
      });
      delete document.body.dataset.drawn;
      draw();
    });
  });
  draw();
}
