// Berth's UI: filter the repository list as one types, and copy pull commands. Everything
// else works without JavaScript.
"use strict";

function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  // Plain http on another host: the clipboard API is not offered there.
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const label = button.dataset.label || button.innerHTML;
  button.dataset.label = label;
  copyText(button.dataset.copy).then(
    () => { button.textContent = "Copied"; button.dataset.copied = "yes"; },
    () => { button.textContent = "Copy failed"; button.dataset.copied = "no"; },
  ).finally(() => setTimeout(() => { button.innerHTML = label; }, 1500));
});

const filter = document.getElementById("filter");
if (filter && filter.dataset.live) {
  const results = document.getElementById("results");
  let timer = null;
  let asked = 0;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const q = filter.value;
      const mine = ++asked;
      const response = await fetch(filter.dataset.live + "&q=" + encodeURIComponent(q), {
        credentials: "same-origin",
      });
      // An answer to an older keystroke that arrives late is dropped.
      if (!response.ok || mine !== asked) return;
      results.innerHTML = await response.text();
      results.dataset.query = q;
      history.replaceState(null, "", q ? "/ui/?q=" + encodeURIComponent(q) : "/ui/");
    }, 120);
  });
}
