// The API docs' interactive explorer (Swagger UI), loaded when the visitor asks for it: its
// 1.5 MB of script would cost every visit of the page seconds on a phone. Its start-up script
// is a file of its own (SpectacularSwaggerSplitView), since the Content-Security-Policy runs
// no inline script. #explorer in the address opens it at once.
"use strict";

(() => {
  const button = document.querySelector(".explorer-open");
  const target = document.getElementById("swagger-ui");
  if (!button || !target) return;

  const load = (element) => new Promise((resolve, reject) => {
    element.addEventListener("load", resolve);
    element.addEventListener("error", () => reject(new Error(`could not load ${element.src || element.href}`)));
    document.head.append(element);
  });

  const open = async () => {
    button.disabled = true;
    const stylesheet = Object.assign(document.createElement("link"), { rel: "stylesheet", href: button.dataset.stylesheet });
    await load(stylesheet);
    for (const src of button.dataset.scripts.split(" ")) {
      await load(Object.assign(document.createElement("script"), { src }));
    }
    button.remove();
    target.focus();
  };

  button.hidden = false;
  button.addEventListener("click", open);
  if (window.location.hash === "#explorer") open();
})();
