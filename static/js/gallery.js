// The gallery's enlarged view, as the original app's popup: a plain click (or Enter) on a
// card opens its display picture in a modal <dialog> with a link to its similar images.
// Without this script, or with a modifier key held, the card's link goes to the image's page.
// showModal() keeps focus inside the dialog and closes it on Escape; focus returns to the card.
(function () {
  "use strict";

  var dialog = document.getElementById("enlarged");
  if (!dialog || typeof dialog.showModal !== "function") return;
  var picture = dialog.querySelector("figure img");
  var caption = dialog.querySelector("figcaption");
  var similarLink = dialog.querySelector(".similar-link");
  var opener = null;

  function open(link) {
    var data = link.dataset;
    // Drop the previous picture first, so the next one never shows it while loading.
    picture.removeAttribute("src");
    picture.removeAttribute("srcset");
    picture.width = Number(data.displayWidth);
    picture.height = Number(data.displayHeight);
    picture.alt = data.title;
    if (data.displaySrcset) picture.srcset = data.displaySrcset;
    picture.src = data.displaySrc;
    caption.textContent = data.title;
    similarLink.href = link.href;
    opener = link;
    dialog.showModal();
  }

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
