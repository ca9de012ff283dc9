// The API docs' interactive explorer (Swagger UI), loaded when the visitor asks for it: its
// 1.5 MB of script would cost every visit of the page seconds on a phone. Its start-up script
// is a file of its own (SpectacularSwaggerSplitView), since the Content-Security-Policy runs
// no inline script. #explorer in the address opens it at once.
"use strict";

(() => {
  const button = document.querySelector(".explorer-open");
  const target = document.getElementById("swagger-ui");
  const files = document.getElementById("explorer-files");
  if (!button || !target || !files) return;

  const load = (element) => new Promise((resolve, reject) => {
    element.addEventListener("load", resolve);
    element.addEventListener("error", () => reject(new Error(`could not load ${element.src || element.href}`)));
    document.head.append(element);
  });

  const open = async () => {
    button.disabled = true;
    // The files the page lists in its inert <template>, one after the other: each script
    // needs the one before it.
    for (const link of files.content.querySelectorAll("link")) {
      await load(Object.assign(document.createElement("link"), { rel: "stylesheet", href: link.getAttribute("href") }));
    }
    for (const script of files.content.querySelectorAll("script")) {
      await load(Object.assign(document.createElement("script"), { src: script.getAttribute("src") }));
    }
    button.remove();
    target.focus();
  };

  button.hidden = false;
  button.addEventListener("click", open);
  if (window.location.hash === "#explorer") open();
})();
