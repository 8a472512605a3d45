// Small behaviours of the dashboard. Loaded as a file: the CSP allows no inline script.
"use strict";

// Copy buttons: <button data-copy="ID"> copies the value of the element with that id.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const text = source.value !== undefined ? source.value : source.textContent;
  navigator.clipboard.writeText(text).then(
    () => { button.textContent = "Copied"; },
    () => { source.select(); button.textContent = "Press Ctrl+C"; },
  );
});
