// Marker icons and words shared by the live map (live.js) and the device pages (device.js).
// Icons are small SVGs (24 x 24): white shapes on the kind's colour.
"use strict";

// Every kind's name, colour, icon and how its value reads, from the server (each kind folder's
// kind.toml): jisakuLive and jisakuDevice set it from their page's config. "other" is always there.
var JISAKU_KINDS = {};

function jisakuKind(kind) {
  return JISAKU_KINDS[kind] || JISAKU_KINDS.other;
}

// The kind's icon: its drawing on a 24 x 24 grid, "C" in it standing for the kind's colour.
function jisakuSvg(kind, size) {
  var k = jisakuKind(kind);
  return '<svg viewBox="0 0 24 24" width="' + (size || 24) + '" height="' + (size || 24) +
    '" aria-hidden="true" focusable="false">' + k.icon.replace(/"C"/g, '"' + k.colour + '"') + "</svg>";
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
