// The operators' camera page: draw the areas to black out on the camera's own picture.
// Drag across the picture to add an area; each is written to the "areas" box as
// [x, y, width, height] fractions of the picture, which the form sends (it also works typed by hand).
"use strict";

function jisakuMaskEditor(img, box, clear) {
  var layer = document.createElement("div");
  layer.className = "mask-layer";
  img.parentNode.insertBefore(layer, img);
  layer.appendChild(img);
  img.draggable = false;  // else the browser drags the picture itself away instead of drawing

  function areas() {
    try { var parsed = JSON.parse(box.value || "[]"); return Array.isArray(parsed) ? parsed : []; }
    catch (e) { return []; }
  }

  function draw() {
    layer.querySelectorAll(".mask-area").forEach(function (el) { el.remove(); });
    areas().forEach(function (a) {
      var el = document.createElement("div");
      el.className = "mask-area";
      el.style.left = a[0] * 100 + "%"; el.style.top = a[1] * 100 + "%";
      el.style.width = a[2] * 100 + "%"; el.style.height = a[3] * 100 + "%";
      layer.appendChild(el);
    });
  }

  function at(event) {
    var r = img.getBoundingClientRect();
    return [Math.min(1, Math.max(0, (event.clientX - r.left) / r.width)),
            Math.min(1, Math.max(0, (event.clientY - r.top) / r.height))];
  }

  var start = null, ghost = null;
  layer.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    start = at(event);
    ghost = document.createElement("div");
    ghost.className = "mask-area mask-drawing";
    layer.appendChild(ghost);
    layer.setPointerCapture(event.pointerId);
  });
  layer.addEventListener("pointermove", function (event) {
    if (!start) return;
    var p = at(event);
    ghost.style.left = Math.min(start[0], p[0]) * 100 + "%"; ghost.style.top = Math.min(start[1], p[1]) * 100 + "%";
    ghost.style.width = Math.abs(p[0] - start[0]) * 100 + "%"; ghost.style.height = Math.abs(p[1] - start[1]) * 100 + "%";
  });
  layer.addEventListener("pointerup", function (event) {
    if (!start) return;
    var p = at(event), round = function (v) { return Math.round(v * 1000) / 1000; };
    var area = [round(Math.min(start[0], p[0])), round(Math.min(start[1], p[1])),
                round(Math.abs(p[0] - start[0])), round(Math.abs(p[1] - start[1]))];
    start = null;
    ghost.remove();
    if (area[2] > 0.005 && area[3] > 0.005) {  // a click is no area
      box.value = JSON.stringify(areas().concat([area]));
      draw();
    }
  });
  box.addEventListener("input", draw);
  if (clear) {
    clear.hidden = false;
    clear.addEventListener("click", function () { box.value = "[]"; draw(); });
  }
  draw();
}
