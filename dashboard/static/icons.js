// Marker icons, drawn by hand as small SVGs (24 x 24): white shapes on the kind's colour.
// Shared by the live map (live.js) and the device pages (device.js).
"use strict";

var JISAKU_KINDS = {
  bus: { colour: "#1565c0", svg:
    '<rect x="4" y="3" width="16" height="15" rx="3" fill="#fff"/>' +
    '<rect x="6" y="5.5" width="12" height="6" rx="1" fill="C"/>' +
    '<circle cx="8" cy="15" r="1.3" fill="C"/><circle cx="16" cy="15" r="1.3" fill="C"/>' +
    '<rect x="5.5" y="17" width="3" height="4" rx="1" fill="#fff"/><rect x="15.5" y="17" width="3" height="4" rx="1" fill="#fff"/>' },
  garbage_truck: { colour: "#2e7d32", svg:
    '<rect x="2" y="5" width="13" height="11" rx="1.5" fill="#fff"/>' +
    '<path d="M5 8.5h7M5 11.5h7" stroke="C" stroke-width="1.4"/>' +
    '<path d="M15.5 8h3.5l3 4v4h-6.5z" fill="#fff"/><rect x="16.8" y="9.3" width="2.3" height="2.5" fill="C"/>' +
    '<circle cx="6.5" cy="18" r="2.4" fill="#fff" stroke="C" stroke-width="1.2"/>' +
    '<circle cx="17.5" cy="18" r="2.4" fill="#fff" stroke="C" stroke-width="1.2"/>' },
  "float": { colour: "#c62828", svg:
    '<path d="M2 8 12 2.5 22 8z" fill="#fff"/><rect x="5" y="8.5" width="14" height="2" fill="#fff"/>' +
    '<rect x="7.5" y="11" width="9" height="5.5" fill="#fff"/><path d="M12 11v5.5" stroke="C" stroke-width="1.2"/>' +
    '<circle cx="8" cy="19" r="2.6" fill="#fff" stroke="C" stroke-width="1.2"/>' +
    '<circle cx="16" cy="19" r="2.6" fill="#fff" stroke="C" stroke-width="1.2"/>' },
  snow_gauge: { colour: "#0277bd", svg:
    '<g stroke="#fff" stroke-width="2" stroke-linecap="round" fill="none">' +
    '<path d="M12 2.5v19M3.8 7.2l16.4 9.6M3.8 16.8 20.2 7.2"/>' +
    '<path d="M9.5 4.2 12 6.5l2.5-2.3M9.5 19.8 12 17.5l2.5 2.3"/></g>' },
  printer_tray: { colour: "#6a1b9a", svg:
    '<rect x="6" y="2.5" width="12" height="6" fill="#fff"/><rect x="2.5" y="8" width="19" height="9" rx="2" fill="#fff"/>' +
    '<rect x="6.5" y="13.5" width="11" height="8" fill="#fff" stroke="C" stroke-width="1.2"/>' },
  other: { colour: "#455a64", svg: '<circle cx="12" cy="12" r="6" fill="#fff"/>' }
};

function jisakuKind(kind) {
  return JISAKU_KINDS[kind] || JISAKU_KINDS.other;
}

function jisakuSvg(kind, size) {
  var k = jisakuKind(kind);
  return '<svg viewBox="0 0 24 24" width="' + (size || 24) + '" height="' + (size || 24) +
    '" aria-hidden="true" focusable="false">' + k.svg.replace(/"C"/g, '"' + k.colour + '"') + "</svg>";
}

function jisakuEscape(text) {
  return String(text).replace(/[&<>"']/g, function (c) {
    return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
  });
}

// A word from the page's catalog, {placeholders} filled: jisakuWord(words, "value.speed", {speed: 20}).
function jisakuWord(words, key, values) {
  var text = words[key] || key;
  Object.keys(values || {}).forEach(function (name) { text = text.split("{" + name + "}").join(values[name]); });
  return text;
}

// Base map from the server's `tiles` setting: a URL template, or a .pmtiles file read with
// the pmtiles package (loaded only then, so other towns never download it).
function jisakuBaseMap(map, tiles, pmtilesScript) {
  if (!tiles.pmtiles) return;
  var script = document.createElement("script");
  script.src = pmtilesScript;
  script.onload = function () {
    // Beyond the file's own zooms, Leaflet enlarges (or shrinks) the nearest tiles it has.
    pmtiles.leafletRasterLayer(new pmtiles.PMTiles(tiles.url), {
      attribution: tiles.attribution, maxZoom: tiles.maxZoom,
      minNativeZoom: tiles.minNativeZoom, maxNativeZoom: tiles.maxNativeZoom }).addTo(map);
  };
  document.head.appendChild(script);
}
