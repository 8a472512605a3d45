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

// Times: each <time datetime> shows how long ago (or how soon) it is, and its exact local time
// on hover; without this script it reads as the server wrote it, in UTC.
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const units = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
function localise(root) {
  for (const time of root.querySelectorAll("time[datetime]")) {
    if (time.title) continue;
    const moment = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) continue;
    time.title = `${moment.toLocaleString()} (${time.textContent})`;
    const seconds = (moment.getTime() - Date.now()) / 1000;
    const [unit, size] = units.find(([, size]) => Math.abs(seconds) >= size) || ["second", 1];
    time.textContent = relative.format(Math.round(seconds / size), unit);
  }
}
localise(document);
document.addEventListener("htmx:load", (event) => localise(event.target));

// Destructive actions ask first: a button's GET form (data-confirm) opens the server's
// question page; with this script that page's question opens in a dialog instead.
document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("form[data-confirm]")) return;
  event.preventDefault();
  const url = `${form.action}?${new URLSearchParams(new FormData(form))}`;
  const answer = await fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  const question = page.getElementById("confirm");
  if (!answer.ok || !question) { window.location.assign(url); return; }
  const dialog = document.createElement("dialog");
  dialog.className = "confirm-dialog";
  dialog.setAttribute("aria-labelledby", "confirm-question");
  dialog.append(document.importNode(question, true));
  dialog.querySelector(".cancel").addEventListener("click", (click) => { click.preventDefault(); dialog.close(); });
  dialog.addEventListener("close", () => { dialog.remove(); form.querySelector("button")?.focus(); });
  document.body.append(dialog);
  dialog.showModal();
});
