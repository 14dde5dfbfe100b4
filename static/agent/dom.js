/*
 * Small DOM helpers for the console: an element builder (text only, never HTML), dates, and the
 * polite and assertive live regions screen readers hear.
 */

import { absoluteHttpUrl, h, icon as widgetIcon } from "../widget/chat/dom.js";

// The widget's element builder and icons: one of each for both.
export { h };

export function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// A same-origin path or an http(s) URL, or null: what a link in the transcript may point at.
export function safeHref(value) {
  return absoluteHttpUrl(value, window.location.origin);
}

export function preview(text, length = 90) {
  const flat = String(text || "").replace(/\s+/g, " ").trim();
  return flat.length > length ? `${flat.slice(0, length - 1)}…` : flat;
}

// Said once by screen readers: `assertive` for errors, polite for everything else.
export function announce(text, { assertive = false } = {}) {
  const region = document.getElementById(assertive ? "ac-alert" : "ac-live");
  if (!region || !text) return;
  // Cleared first, so that the same sentence twice in a row is said twice.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = text;
  }, 30);
}

// An outline icon (the widget's), hidden from screen readers: the text beside it says it.
export function icon(name) {
  return widgetIcon(name, "ac-icon");
}
