// Starts Redoc with the nonce of the page's Content-Security-Policy, which Redoc gives the
// <style> elements it writes (this script's own nonce: only a script can read it).
"use strict";

(() => {
  const container = document.getElementById("redoc-container");
  const fonts = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
  const settings = {
    nonce: document.currentScript.nonce,
    theme: { typography: { fontFamily: fonts, headings: { fontFamily: fonts } } },
  };
  window.Redoc.init(container.dataset.specUrl, settings, container);
})();
