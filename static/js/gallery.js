// The gallery's enlarged view, as the original app's popup: a plain click (or Enter) on a
// card opens its display picture in a modal <dialog> with a link to its similar images.
// Without this script, or with a modifier key held, the card's link goes to the image's page.
// showModal() keeps focus inside the dialog and closes it on Escape; focus returns to the card.
(function () {
  "use strict";

  var dialog = document.getElementById("enlarged");
  if (!dialog || typeof dialog.showModal !== "function") return;
  var figure = dialog.querySelector("figure");
  var caption = dialog.querySelector("figcaption");
  var similarLink = dialog.querySelector(".similar-link");
  var picture = null;
  var opener = null;

  // The room the dialog gives its picture, as static/css/site.css lays it out: up to
  // min(92vw, 82rem) wide less its 1rem padding either side, up to 94vh high less about
  // 9rem for the close button, caption and link.
  function room() {
    var rem = parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
    return {
      width: Math.min(window.innerWidth * 0.92, 82 * rem) - 2 * rem,
      height: window.innerHeight * 0.94 - 9 * rem
    };
  }

  // Width and height attributes in CSS pixels that fit the room, scaled down, never up
  // beyond the picture's own pixels: the dialog keeps that box while the picture loads,
  // so nothing moves when it arrives, and sizes lets the browser choose the file for it.
  function fit(img) {
    var width = Number(img.dataset.naturalWidth), height = Number(img.dataset.naturalHeight);
    var space = room();
    var scale = Math.min(1, space.width / width, Math.max(space.height, 8) / height);
    var shown = Math.max(1, Math.round(width * scale));
    img.width = shown;
    img.height = Math.max(1, Math.round(height * scale));
    img.sizes = shown + "px";
  }

  function open(link) {
    var data = link.dataset;
    // A new element each time: the next picture never shows the previous one while loading.
    var img = document.createElement("img");
    img.alt = data.title;
    img.dataset.naturalWidth = data.displayWidth;
    img.dataset.naturalHeight = data.displayHeight;
    fit(img);
    if (data.displaySrcset) img.srcset = data.displaySrcset;
    img.src = data.displaySrc;
    if (picture) picture.remove();
    figure.insertBefore(img, caption);
    picture = img;
    caption.textContent = data.title;
    similarLink.href = link.href;
    opener = link;
    dialog.showModal();
  }

  window.addEventListener("resize", function () {
    if (picture && dialog.open) fit(picture);
  });

  document.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var link = event.target.closest("a[data-display-src]");
    if (!link) return;
    event.preventDefault();
    open(link);
  });

  // A click on the backdrop (outside the dialog's body) closes it too.
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close();
  });

  dialog.addEventListener("close", function () {
    if (opener && document.contains(opener)) opener.focus();
    opener = null;
  });

  // The cards say what a click does now.
  document.querySelectorAll("a[data-display-src]").forEach(function (link) {
    link.setAttribute("aria-haspopup", "dialog");
  });
})();
