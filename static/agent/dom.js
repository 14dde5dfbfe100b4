/*
 * Small DOM helpers for the console: an element builder (text only, never HTML), dates, and the
 * polite and assertive live regions screen readers hear.
 */

export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === "class") element.className = value;
      else if (key === "text") element.textContent = value;
      else if (key === "testid") element.setAttribute("data-testid", value);
      else if (key.startsWith("on") && typeof value === "function") {
        element.addEventListener(key.slice(2).toLowerCase(), value);
      } else element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// A same-origin path or an http(s) URL, or null: what a link in the transcript may point at.
export function safeHref(value) {
  if (typeof value !== "string" || !value.trim()) return null;
  try {
    const url = new URL(value.trim(), window.location.origin);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch (error) {
    return null;
  }
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

const ICONS = {
  thumbUp: "M7 10v11M7 10l4-8a3 3 0 0 1 3 3v4h5.6a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18.2 21H7M7 10H4a1 1 0 0 0-1 1v9a1 1 0 0 0 1 1h3",
  thumbDown: "M17 14V3M17 14l-4 8a3 3 0 0 1-3-3v-4H4.4a2 2 0 0 1-2-2.3l1.4-8A2 2 0 0 1 5.8 3H17M17 14h3a1 1 0 0 0 1-1V4a1 1 0 0 0-1-1h-3",
};

// An outline icon (the widget's paths), hidden from screen readers: the text beside it says it.
export function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", "ac-icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}
