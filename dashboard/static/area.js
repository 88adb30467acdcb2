// The area of an alert rule, on the operators' rules page: draw a polygon, a rectangle or a
// circle on the map, or paste GeoJSON into the box. Each fills in the other. Without
// JavaScript (or without the map files) the box alone still works.
//
// Drawing and editing come from Leaflet-Geoman (npm @geoman-io/leaflet-geoman-free).
// The box holds what the gateway reads (jisaku/gateway/areas.py): a GeoJSON Feature of a
// Polygon, or {"type": "circle", "lat": …, "lon": …, "radius_m": …}.
function jisakuAreaMap(config) {
  var box = document.getElementById("rule-area");
  var element = document.getElementById("rule-area-map");
  if (!box || !element || !window.L || !L.PM) return;
  element.parentNode.hidden = false;

  var map = L.map(element);
  if (config.tiles.pmtiles) {
    jisakuBaseMap(map, config.tiles, config.pmtilesScript);
  } else {
    L.tileLayer(config.tiles.url, { attribution: config.tiles.attribution, maxZoom: config.tiles.maxZoom }).addTo(map);
  }
  config.devices.forEach(function (d) {  // where the town's devices are, to draw around
    L.circleMarker([d.lat, d.lon], { radius: 5, color: "#1d3557", pmIgnore: true }).bindTooltip(d.name).addTo(map);
  });
  map.pm.setLang(config.lang === "ja" ? "ja" : "en");
  map.pm.addControls({
    position: "topleft", drawMarker: false, drawCircleMarker: false, drawPolyline: false, drawText: false,
    cutPolygon: false, rotateMode: false, dragMode: false,
  });

  var drawn = null;

  function areaOf(layer) {
    var round = function (x) { return Math.round(x * 1e6) / 1e6; };
    if (layer instanceof L.Circle) {
      var c = layer.getLatLng();
      return { type: "circle", lat: round(c.lat), lon: round(c.lng), radius_m: Math.round(layer.getRadius()) };
    }
    return { type: "Feature", properties: {}, geometry: layer.toGeoJSON(6).geometry };
  }

  function keep(layer) {  // the one area of this rule: a new drawing replaces it
    if (drawn && drawn !== layer) map.removeLayer(drawn);
    drawn = layer;
    var write = function () { box.value = JSON.stringify(areaOf(layer)); };
    layer.on("pm:edit", write);
    write();
  }

  function show(area) {  // what the box says, on the map
    if (drawn) { map.removeLayer(drawn); drawn = null; }
    if (!area) return false;
    var layer = area.type === "circle"
      ? L.circle([area.lat, area.lon], { radius: area.radius_m })
      : L.geoJSON(area).getLayers()[0];
    if (!layer) return false;
    layer.addTo(map);
    drawn = layer;
    layer.on("pm:edit", function () { box.value = JSON.stringify(areaOf(layer)); });
    map.fitBounds(layer.getBounds(), { padding: [20, 20] });
    return true;
  }

  function fromBox() {
    try { return show(box.value.trim() ? JSON.parse(box.value) : null); } catch (e) { return false; }
  }

  map.on("pm:create", function (e) { keep(e.layer); });
  map.on("pm:remove", function (e) { if (e.layer === drawn) { drawn = null; box.value = ""; } });
  box.addEventListener("change", fromBox);

  if (!fromBox()) {
    if (config.devices.length) {
      map.fitBounds(config.devices.map(function (d) { return [d.lat, d.lon]; }), { padding: [30, 30], maxZoom: 15 });
    } else {
      map.setView(config.center, config.zoom);
    }
  }
  window.jisakuArea = { map: map, layer: function () { return drawn; } };  // for tests
}
