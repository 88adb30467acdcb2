// The live map: draws every public device from latest.geojson and moves the
// markers whenever the server-sent event stream says something changed.
// Plain JavaScript and Leaflet only, so that anyone can read and change it.
"use strict";

var JISAKU_KINDS = {
  bus: { label: "Bus", plural: "buses", ja: "バス", letter: "B", colour: "#1565c0" },
  garbage_truck: { label: "Garbage truck", plural: "garbage trucks", ja: "ごみ収集車", letter: "G", colour: "#2e7d32" },
  "float": { label: "Festival float", plural: "festival floats", ja: "祭り屋台", letter: "F", colour: "#c62828" },
  snow_gauge: { label: "Snow gauge", plural: "snow gauges", ja: "積雪計", letter: "S", colour: "#0277bd" },
  printer_tray: { label: "Printer tray", plural: "printer trays", ja: "プリンタートレイ", letter: "P", colour: "#6a1b9a" }
};

function jisakuKind(kind) {
  return JISAKU_KINDS[kind] || { label: kind, plural: kind, ja: kind, letter: "?", colour: "#455a64" };
}

function jisakuEscape(text) {
  return String(text).replace(/[&<>"']/g, function (c) {
    return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
  });
}

// Deeper snow, darker blue: the value itself is written on the marker.
function jisakuSnowColour(cm) {
  if (cm >= 50) return "#1a237e";
  if (cm >= 20) return "#1565c0";
  return "#4fc3f7";
}

function jisakuIcon(feature) {
  var p = feature.properties, v = p.values || {}, kind = jisakuKind(p.kind);
  var html, cls = "jisaku-marker jisaku-" + p.kind;
  if (p.status === "offline") cls += " jisaku-offline";
  if (p.kind === "snow_gauge" && typeof v.depth_cm === "number") {
    html = '<span class="jisaku-value" style="background:' + jisakuSnowColour(v.depth_cm) + '">' +
      Math.round(v.depth_cm) + " cm</span>";
    return L.divIcon({ className: cls, html: html, iconSize: [64, 28], iconAnchor: [32, 14] });
  }
  if (p.kind === "printer_tray") {
    html = '<span class="jisaku-value" style="background:' + kind.colour + '">' +
      (v.paper ? "paper on tray" : "tray empty") + "</span>";
    return L.divIcon({ className: cls, html: html, iconSize: [110, 28], iconAnchor: [55, 14] });
  }
  var arrow = typeof v.heading === "number"
    ? '<span class="jisaku-heading" style="transform:rotate(' + v.heading + 'deg)">&#9650;</span>' : "";
  html = '<span class="jisaku-badge" style="background:' + kind.colour + '">' + arrow + kind.letter + "</span>";
  return L.divIcon({ className: cls, html: html, iconSize: [36, 36], iconAnchor: [18, 18] });
}

function jisakuPopup(feature) {
  var p = feature.properties, v = p.values || {}, kind = jisakuKind(p.kind);
  var rows = Object.keys(v).filter(function (k) { return k !== "lat" && k !== "lon"; }).map(function (k) {
    return "<tr><th>" + jisakuEscape(k) + "</th><td>" + jisakuEscape(v[k]) + "</td></tr>";
  }).join("");
  var ago = p.ts ? Math.max(0, Math.round(Date.now() / 1000 - p.ts)) + " s ago" : "no data yet";
  return "<strong>" + jisakuEscape(p.name || feature.id) + "</strong><br>" +
    jisakuEscape(kind.label) + " / " + jisakuEscape(kind.ja) + " · " + jisakuEscape(p.status) +
    "<table>" + rows + "</table><small>updated " + ago + "</small>";
}

function jisakuLive(map, urls) {
  var markers = {};
  var fitted = false;
  var summary = document.getElementById("jisaku-summary");

  function show(collection) {
    var seen = {}, counts = {}, bounds = [];
    collection.features.forEach(function (feature) {
      seen[feature.id] = true;
      if (!feature.geometry) return;
      var ll = [feature.geometry.coordinates[1], feature.geometry.coordinates[0]];
      bounds.push(ll);
      counts[feature.properties.kind] = (counts[feature.properties.kind] || 0) + 1;
      var marker = markers[feature.id];
      if (!marker) {
        marker = markers[feature.id] = L.marker(ll, { title: feature.properties.name || feature.id,
                                                     keyboard: true }).addTo(map);
      } else {
        marker.setLatLng(ll);
      }
      marker.setIcon(jisakuIcon(feature));
      marker.getElement().dataset.deviceId = feature.id;
      marker.bindPopup(jisakuPopup(feature));
    });
    Object.keys(markers).forEach(function (id) {
      if (!seen[id]) { map.removeLayer(markers[id]); delete markers[id]; }
    });
    if (!fitted && bounds.length) { map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 }); fitted = true; }
    if (summary) {
      summary.textContent = Object.keys(counts).sort().map(function (k) {
        var kind = jisakuKind(k);
        return counts[k] + " " + (counts[k] > 1 ? kind.plural : kind.label.toLowerCase());
      }).join(" · ") || "No devices yet";
    }
  }

  function poll() {
    fetch(urls.geojson, { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(show)
      .catch(function () {});
  }

  poll();
  if (window.EventSource) {
    var source = new EventSource(urls.stream);
    source.addEventListener("latest", function (e) { show(JSON.parse(e.data)); });
  } else {
    setInterval(poll, 5000);  // browsers without server-sent events
  }
  window.jisakuMarkers = markers;  // for tests and the curious, in the browser console
}
