"""Is any text cut off? A check run in the browser on a page as a person sees it.

Returns what would be lost: text wider than the screen, or text clipped by its box
(overflow hidden / ellipsis), each as "tag#id.class: the text". Used at 360 px (a phone)
and 1920 × 1080 (a TV in the hall).
"""

CUT_OFF_TEXT = """() => {
  const problems = [];
  const page = document.documentElement;
  if (page.scrollWidth > window.innerWidth + 1) problems.push(`the page is ${page.scrollWidth}px wide`);
  for (const element of document.body.querySelectorAll("*")) {
    if (!element.offsetParent && getComputedStyle(element).position !== "fixed") continue;  // not shown
    // A skip link waits off screen for the keyboard; a map's markers pan with the map.
    if (element.closest(".jisaku-skip, .leaflet-pane")) continue;
    const own = Array.from(element.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const box = element.getBoundingClientRect();
    const name = `${element.tagName.toLowerCase()}#${element.id}.${element.className}: ${element.textContent.trim().slice(0, 40)}`;
    if (box.right > window.innerWidth + 1 || box.left < -1) problems.push(`${name} runs off the screen`);
    if (element.scrollWidth > element.clientWidth + 1 || element.scrollHeight > element.clientHeight + 1) {
      const style = getComputedStyle(element);
      if (style.overflowX !== "visible" || style.overflowY !== "visible" || style.textOverflow === "ellipsis")
        problems.push(`${name} is clipped by its box`);
    }
    for (let parent = element.parentElement; parent; parent = parent.parentElement) {
      const style = getComputedStyle(parent);
      if (style.overflow === "hidden") {
        const outer = parent.getBoundingClientRect();
        if (box.bottom > outer.bottom + 1 || box.right > outer.right + 1) problems.push(`${name} is hidden by ${parent.tagName.toLowerCase()}.${parent.className}`);
        break;
      }
    }
  }
  return problems;
}"""


def cut_off_text(page) -> list[str]:
    return page.evaluate(CUT_OFF_TEXT)
