// The live map: draws every public device from latest.geojson and moves the markers
// whenever the server-sent event stream (/api/v1/stream) says something changed; when
// the stream is unavailable it asks for latest.geojson every POLL_MS instead.
// The stream sends one "latest" event (every device) when it opens, then "changes" events
// with only the devices that changed and the ids that left, so a phone downloads little.
// Plain JavaScript and Leaflet only (plus icons.js), so that anyone can read and change it.
"use strict";

var JISAKU_POLL_MS = 1500;   // fallback polling: a new position still shows within 2 s

function jisakuLive(map, config) {
  var words = config.words, lang = config.lang;
  JISAKU_KINDS = config.kinds;  // in the order their buttons stand: vehicles first
  var number = new Intl.NumberFormat(lang, { maximumFractionDigits: 1 });
  var relative = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(lang, { numeric: "always" }) : null;
  var markers = {}, features = {}, layers = {}, chips = {};
  var fitted = false, streamOk = false, pollTimer = null;
  var chipBar = document.getElementById("jisaku-kinds");
  var summary = document.getElementById("jisaku-summary");

  function w(key, values) { return jisakuWord(words, key, values); }
  function known(kind) { return Object.prototype.hasOwnProperty.call(JISAKU_KINDS, kind) ? kind : "other"; }

  function ago(ts) {
    var s = Math.max(0, Math.round(Date.now() / 1000 - ts));
    if (!relative) return s + " s";
    if (s < 90) return relative.format(-s, "second");
    if (s < 5400) return relative.format(-Math.round(s / 60), "minute");
    if (s < 172800) return relative.format(-Math.round(s / 3600), "hour");
    return relative.format(-Math.round(s / 86400), "day");
  }

  function limitsOf(feature) {
    return config.limits[feature.id] || config.kindLimits[known(feature.properties.kind)] || config.kindLimits.other;
  }

  // live, stale (greyed), hidden (a vehicle silent for long), offline or waiting: like pages.freshness().
  function stateOf(feature) {
    var p = feature.properties, lim = limitsOf(feature);
    if (p.ts === null || p.ts === undefined) return "waiting";
    var age = Date.now() / 1000 - p.ts;
    if (lim.hide_s !== null && age > lim.hide_s) return "hidden";
    if (age > lim.stale_s) return "stale";
    if (p.status === "offline") return "offline";
    return "live";
  }

  // low, warn or alert: the device's own levels (the settings it applied), else its kind's defaults.
  function levelOf(feature, value) {
    var t = config.levels[feature.id] || jisakuKind(feature.properties.kind).marker.levels.defaults;
    return value >= t[1] ? "alert" : value >= t[0] ? "warn" : "low";
  }

  function unitOf(kind) { var unit = jisakuKind(kind).marker.unit; return unit ? " " + unit : ""; }

  function compass(deg) {
    return ["n", "ne", "e", "se", "s", "sw", "w", "nw"][Math.round(((deg % 360) + 360) % 360 / 45) % 8];
  }

  // The Japanese name on a Japanese page when the device has one, else the (English) name.
  function nameOf(feature) {
    var p = feature.properties;
    return (lang === "ja" && p.name_ja) || p.name || feature.id;
  }

  function shortLabel(id) { var m = /(\d+)$/.exec(id); return m ? m[1] : ""; }

  // A pill with the reading (style "value" in kind.toml), else the icon in a circle with its number.
  function icon(feature, state) {
    var p = feature.properties, v = p.values || {}, kind = known(p.kind), look = jisakuKind(kind);
    var cls = "jisaku-marker jisaku-" + kind + (state === "live" || state === "waiting" ? "" : " jisaku-stale");
    if (p.shelter) return shelterIcon(feature, "jisaku-marker jisaku-shelter");
    var metric = look.marker.metric, value = metric ? v[metric] : undefined, html;
    if (look.marker.style === "value" && typeof value === "number") {
      var states = look.metrics[metric] && look.metrics[metric].states, text, extra = "";
      if (states && states.length) {
        text = states[value] || String(value);
        if (!value) extra = " jisaku-value-off";
      } else {
        text = number.format(Math.round(value)) + unitOf(kind);
        if (look.marker.levels) extra = " jisaku-level-" + levelOf(feature, value);
      }
      html = '<span class="jisaku-value' + extra + '" style="background:' + look.colour + '">' +
        jisakuSvg(kind, 16) + "<span>" + jisakuEscape(text) + "</span></span>";
      return L.divIcon({ className: cls, html: html, iconSize: null, iconAnchor: [20, 18] });
    }
    var arrow = typeof v.heading === "number"
      ? '<span class="jisaku-heading" style="transform:rotate(' + v.heading + 'deg)"></span>' : "";
    var label = shortLabel(feature.id);
    html = arrow + '<span class="jisaku-badge" style="background:' + look.colour + '">' +
      jisakuSvg(kind, 26) + "</span>" + (label ? '<span class="jisaku-label">' + jisakuEscape(label) + "</span>" : "");
    return L.divIcon({ className: cls, html: html, iconSize: [44, 44], iconAnchor: [22, 22], popupAnchor: [0, -20] });
  }

  // A shelter: a pill coloured by how full it is (空きあり / 混雑 / 満員 / 閉鎖), with the count and the
  // word, never the colour alone. Not greyed when its tally is quiet: the operators' open/close stands.
  function shelterIcon(feature, cls) {
    var s = feature.properties.shelter, look = config.shelterLevels[s.level];
    var text = look.label + (s.level === "closed" || typeof s.count !== "number" ? ""
      : " " + number.format(s.count) + (s.capacity ? "/" + number.format(s.capacity) : ""));
    var html = '<span class="jisaku-value" style="background:' + look.colour + ";color:" + look.text + '">' +
      jisakuSvg("shelter", 16) + "<span>" + jisakuEscape(text) + "</span></span>";
    return L.divIcon({ className: cls + " jisaku-shelter-" + s.level, html: html, iconSize: null, iconAnchor: [20, 18] });
  }

  // The way there: the phone's own map app (geo: on Android; Apple Maps' address on an iPhone).
  function wayThere(feature) {
    var ll = feature.geometry.coordinates[1] + "," + feature.geometry.coordinates[0];
    return /iPhone|iPad|Macintosh/.test(navigator.userAgent) ? "https://maps.apple.com/?daddr=" + ll : "geo:" + ll + "?q=" + ll;
  }

  function shelterLines(feature) {
    var s = feature.properties.shelter, lines = [config.shelterLevels[s.level].label];
    if (typeof s.count === "number" && s.level !== "closed") lines.push(w("shelter.count", { count: number.format(s.count) }));
    if (s.capacity) lines.push(w("shelter.capacity", { capacity: number.format(s.capacity) }));
    return lines;
  }

  // What the values say, a line each; the same lines as the list page (kind_view.reading_lines).
  function describe(feature, state) {
    var p = feature.properties, v = p.values || {}, lines = [], metrics = jisakuKind(known(p.kind)).metrics;
    if (p.shelter) metrics = {};  // its own lines (shelterLines): the operators' open/close counts
    Object.keys(metrics).forEach(function (name) {
      var m = metrics[name], value = v[name];
      if (typeof value !== "number") return;
      if (m.states.length && value >= 0 && value < m.states.length) lines.push(m.states[Math.floor(value)]);
      else if (m.reads) lines.push(m.reads.split("{value}").join(number.format(value)));
    });
    if (typeof v.speed_kmh === "number") lines.push(w("value.speed", { speed: number.format(Math.round(v.speed_kmh)) }));
    if (typeof v.heading === "number") lines.push(w("value.heading", { direction: w("direction." + compass(v.heading)) }));
    var status = w("status." + (state === "hidden" ? "stale" : state));
    var when = p.ts ? w("status.updated", { ago: ago(p.ts) }) : w("status.never");
    return { lines: lines, status: status, when: when };
  }

  // A camera's newest picture (its public copy's thumbnail), and whether the camera went quiet.
  function pictureOf(feature) {
    var picture = feature.properties.picture;
    if (!picture) return "";
    var quiet = Date.now() / 1000 - picture.ts > limitsOf(feature).stale_s;
    return '<img class="jisaku-popup-picture" src="' + jisakuEscape(picture.thumbnail) + '" alt="' +
      jisakuEscape(w("picture.alt", { name: nameOf(feature) })) + '" width="240" loading="lazy">' +
      '<span class="jisaku-picture-when' + (quiet ? " jisaku-quiet" : "") + '">' + jisakuEscape(quiet
        ? w("picture.quiet", { minutes: number.format(Math.round((Date.now() / 1000 - picture.ts) / 60)) })
        : w("picture.taken", { ago: ago(picture.ts) })) + "</span>";
  }

  function popup(feature, state) {
    var p = feature.properties, d = describe(feature, state), kind = known(p.kind);
    if (p.shelter) d.lines = shelterLines(feature);
    var way = p.shelter && feature.geometry ? '<a class="jisaku-button jisaku-way" href="' + jisakuEscape(wayThere(feature)) +
      '">' + jisakuEscape(w("shelter.way")) + "</a>" : "";
    return '<div class="jisaku-popup"><strong>' + jisakuEscape(nameOf(feature)) + "</strong>" +
      '<span class="jisaku-popup-kind">' + jisakuEscape(jisakuKind(kind).name) + "</span>" +
      (p.shelter ? "" : pictureOf(feature)) +
      d.lines.map(function (line) { return "<span>" + jisakuEscape(line) + "</span>"; }).join("") +
      '<span class="jisaku-state jisaku-state-' + state + '">' + jisakuEscape(d.status) + "</span> " +
      '<span class="jisaku-ago">' + jisakuEscape(d.when) + "</span>" + way +
      '<a class="jisaku-button" href="' + jisakuEscape(pageOf(feature)) + '">' +
      jisakuEscape(w("map.details")) + "</a></div>";
  }

  // The kind's own residents' page (kind.toml [pages] residents, e.g. the counter's), else the device page.
  function pageOf(feature) {
    var page = jisakuKind(known(feature.properties.kind)).page, id = encodeURIComponent(feature.id);
    if (config.devicePage) return config.devicePage.split("{id}").join(id);  // the practice map: operator pages
    // inside the town: /t/<id>/devices/… on town <id>'s map (config.base is "" for the first town)
    return (config.base || "") + (page ? page.split("{id}").join(id) : "/devices/" + id);
  }

  function layerFor(kind) {
    if (!layers[kind]) {
      layers[kind] = L.layerGroup().addTo(map);
      var chip = document.createElement("button");
      chip.type = "button";
      chip.className = "jisaku-chip";
      chip.dataset.kind = kind;
      chip.setAttribute("aria-pressed", "true");
      chip.innerHTML = '<span class="jisaku-chip-icon" style="background:' + jisakuKind(kind).colour + '">' +
        jisakuSvg(kind, 18) + '</span><span class="jisaku-chip-name">' + jisakuEscape(jisakuKind(kind).plural) +
        '</span> <span class="jisaku-chip-count"></span>';
      chip.addEventListener("click", function () {
        var on = chip.getAttribute("aria-pressed") !== "true";
        chip.setAttribute("aria-pressed", on ? "true" : "false");
        if (on) layers[kind].addTo(map); else map.removeLayer(layers[kind]);
      });
      chips[kind] = chip;
      // In the kinds' order (kind.toml's `order`): vehicles first, what most people open the map for.
      var order = Object.keys(JISAKU_KINDS);
      var after = Object.keys(chips).filter(function (k) { return order.indexOf(k) > order.indexOf(kind); })
        .map(function (k) { return chips[k]; }).sort(function (a, b) {
          return order.indexOf(a.dataset.kind) - order.indexOf(b.dataset.kind); })[0];
      chipBar.insertBefore(chip, after || null);
    }
    return layers[kind];
  }

  // Draw one device, or update it: called on every new collection and once a second.
  function place(feature) {
    var kind = known(feature.properties.kind), state = stateOf(feature);
    var marker = markers[feature.id], layer = layerFor(kind);
    if (!feature.geometry || state === "hidden") {
      if (marker) { layer.removeLayer(marker); delete markers[feature.id]; }
      return state;
    }
    var ll = [feature.geometry.coordinates[1], feature.geometry.coordinates[0]];
    var title = nameOf(feature);
    if (!marker) {
      marker = markers[feature.id] = L.marker(ll, { title: title, alt: title, keyboard: true, riseOnHover: true });
      marker.bindPopup("", { maxWidth: 260, minWidth: 200 });
      // Leaflet makes a new element each time the marker is shown again (a kind switched back on).
      marker.on("add", function () { label(marker); });
      layer.addLayer(marker);
    } else if (!marker.getLatLng().equals(ll)) {
      marker.setLatLng(ll);
    }
    var d = describe(feature, state);
    var key = state + title + JSON.stringify(feature.properties.values) + JSON.stringify(feature.properties.picture) +
      JSON.stringify(feature.properties.shelter);
    if (marker._jisakuKey !== key) {  // a new icon and popup only when something shown on them changed
      marker._jisakuKey = key;
      marker.options.title = marker.options.alt = title;  // a renamed device: setIcon uses them
      marker.setIcon(icon(feature, state));
      marker.setPopupContent(popup(feature, state));
    } else if (marker.isPopupOpen()) {  // else just the clock, so a finger on the link is not disturbed
      var clock = marker.getPopup().getElement().querySelector(".jisaku-ago");
      if (clock) clock.textContent = d.when;
    }
    marker._jisakuLabel = { id: feature.id, state: state,
      text: [title, jisakuKind(kind).name].concat(d.lines, [d.status, d.when]).join(", ") };
    label(marker);
    return state;
  }

  // What tests and screen readers know a marker by: its device id, state and a sentence.
  function label(marker) {
    var element = marker.getElement(), about = marker._jisakuLabel;
    if (!element || !about) return;
    element.dataset.deviceId = about.id;
    element.dataset.state = about.state;
    element.setAttribute("aria-label", about.text);
  }

  function refresh() {
    var counts = {}, hidden = 0, bounds = [];
    Object.keys(features).forEach(function (id) {
      var feature = features[id], state = place(feature), kind = known(feature.properties.kind);
      counts[kind] = (counts[kind] || 0) + (state === "hidden" || !feature.geometry ? 0 : 1);
      if (state === "hidden") hidden += 1;
      // In disaster mode the map opens on the shelters, the first thing anyone needs then.
      if (markers[id] && (!config.disaster || feature.properties.shelter)) bounds.push(markers[id].getLatLng());
    });
    Object.keys(chips).forEach(function (kind) {
      chips[kind].querySelector(".jisaku-chip-count").textContent = number.format(counts[kind] || 0);
    });
    Object.keys(config.legends).forEach(function (kind) {
      if (counts[kind] && !legends[kind]) legends[kind] = legend(kind).addTo(map);
    });
    if (!fitted && bounds.length) {
      // Room at the bottom for the legend and the zoom buttons, so no marker hides behind them.
      map.fitBounds(bounds, { paddingTopLeft: [40, 40], paddingBottomRight: [40, 130], maxZoom: 16 });
      fitted = true;
    }
    var text = Object.keys(features).length ? "" : w("map.none");
    if (hidden) text = w("map.hidden_stale", { n: hidden });
    if (!streamOk && pollTimer === null && Object.keys(features).length) text = w("map.connection_lost");
    if (summary.textContent !== text) summary.textContent = text;  // aria-live: speak changes only
    summary.hidden = !text;
  }

  function forget(id) {  // gone from the public list (made private or removed): gone from the map
    if (markers[id]) { layers[known(features[id].properties.kind)].removeLayer(markers[id]); delete markers[id]; }
    delete features[id];
  }

  // A whole collection: from latest.geojson, or the stream's "latest" event.
  function show(collection) {
    var fresh = {};
    collection.features.forEach(function (feature) { fresh[feature.id] = feature; });
    Object.keys(features).forEach(function (id) { if (!fresh[id]) forget(id); });
    features = fresh;
    refresh();
  }

  // The stream's "changes" event: new or changed devices, and the ids that left.
  function change(changes) {
    changes.removed.forEach(forget);
    changes.features.forEach(function (feature) {
      var before = features[feature.id];
      if (before && markers[feature.id] && known(before.properties.kind) !== known(feature.properties.kind)) {
        forget(feature.id);  // its kind changed: the marker moves to the other kind's layer
      }
      features[feature.id] = feature;
    });
    refresh();
  }

  function poll() {
    return fetch(config.geojson, { cache: "no-store" })
      .then(function (r) { return r.json(); })
      // An answer that arrives after the stream opened may be older than its snapshot.
      .then(function (collection) { if (!streamOk) show(collection); })
      .catch(function () {});
  }

  function startPolling() { if (pollTimer === null) pollTimer = setInterval(poll, JISAKU_POLL_MS); }
  function stopPolling() { if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; } }

  L.control.zoom({ position: "bottomright", zoomInTitle: "+", zoomOutTitle: "-" }).addTo(map);
  jisakuBaseMap(map, config.tiles, config.pmtilesScript);
  // The colours of a kind with levels (snow depth: low, warn, alert), once one is on the map.
  var legends = {};
  function legend(kind) {
    var control = L.control({ position: "bottomleft" }), t = config.legends[kind], look = jisakuKind(kind);
    control.onAdd = function () {
      var div = L.DomUtil.create("div", "jisaku-legend");
      var values = { warn: number.format(t[0]), alert: number.format(t[1]), unit: unitOf(kind) };
      div.dataset.kind = kind;
      div.innerHTML = "<strong>" + jisakuEscape(look.marker.levels.legend) + "</strong>" +
        ["low", "warn", "alert"].map(function (level) {
          return '<span><i class="jisaku-level-' + level + '"></i>' + jisakuEscape(w("level." + level, values)) + "</span>";
        }).join("");
      return div;
    };
    return control;
  }

  poll();
  if (window.EventSource && config.stream) {  // the operators' practice map has no stream: it polls
    var source = new EventSource(config.stream);
    source.addEventListener("latest", function (e) { show(JSON.parse(e.data)); });
    source.addEventListener("changes", function (e) { change(JSON.parse(e.data)); });
    source.onopen = function () { streamOk = true; stopPolling(); refresh(); };
    // The browser reconnects by itself; meanwhile the map keeps moving by polling.
    source.onerror = function () { streamOk = false; startPolling(); };
  } else {
    startPolling();
  }
  setInterval(refresh, 1000);  // "updated N s ago", greying and hiding happen as time passes
  window.jisakuMarkers = markers;  // for tests and the curious, in the browser console
  window.jisakuMap = map;
}
