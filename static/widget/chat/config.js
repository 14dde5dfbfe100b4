/*
 * Configuration: what the server put in the page (#widget-config), the query string and the
 * browser's language, read once. Settings that only the embedding site may choose (the greeting
 * and the title) are not read from the URL: they arrive from embed.js through the bridge.
 */

export const STORAGE_KEY = "cs-widget:conversation";
export const SMALL_IMAGE_BYTES = 1024 * 1024;
export const RECENT_MESSAGE_MS = 2 * 60 * 1000;
export const CSAT_PROMPT_AFTER_REPLIES = 3;
export const NOTICE_HIDE_MS = 12000;
const DEFAULT_ACCEPTED_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif"];

function readJsonConfig() {
  const element = document.getElementById("widget-config");
  if (!element) return {};
  try {
    const value = JSON.parse(element.textContent || "{}");
    return value && typeof value === "object" ? value : {};
  } catch (error) {
    return {};
  }
}

export function normalizeLocale(value) {
  if (!value || typeof value !== "string") return null;
  return value.trim().toLowerCase().startsWith("zh") ? "zh-Hans" : "en";
}

function browserLocale() {
  const languages = navigator.languages && navigator.languages.length
    ? navigator.languages
    : [navigator.language || "en"];
  return normalizeLocale(languages[0]) || "en";
}

function positiveNumber(value, fallback) {
  const number = Number(value);
  return Number.isFinite(number) && number > 0 ? number : fallback;
}

function isFramed() {
  try {
    return window.self !== window.top;
  } catch (error) {
    return true;
  }
}

export function stringOrNull(value) {
  if (typeof value !== "string") return null;
  const trimmed = value.trim();
  return trimmed ? trimmed.slice(0, 500) : null;
}

function originList(value) {
  if (!Array.isArray(value)) return [];
  return value.filter((origin) => typeof origin === "string" && origin).map((origin) => origin.replace(/\/+$/, ""));
}

// The platform's origin: where the REST API, the websocket and the knowledge-base pages live. The
// chat page is served by the platform (inside the embed iframe too), so the API base resolves
// against this page; an absolute apiBase names the platform itself.
function originOf(apiBase) {
  try {
    return new URL(apiBase, window.location.href).origin;
  } catch (error) {
    return window.location.origin;
  }
}

const rawConfig = readJsonConfig();
const query = new URLSearchParams(window.location.search);

export const framed = isFramed();

export const config = {
  apiBase: String(rawConfig.apiBase || "/api/widget").replace(/\/+$/, ""),
  locale: normalizeLocale(query.get("lang")) || normalizeLocale(rawConfig.locale) || browserLocale(),
  maxAttachments: Math.floor(positiveNumber(rawConfig.maxAttachmentsPerMessage, 4)),
  maxUploadBytes: positiveNumber(rawConfig.maxUploadBytes, 10 * 1024 * 1024),
  maxImageSide: Math.floor(positiveNumber(rawConfig.maxImageSide, 2048)),
  acceptedTypes: Array.isArray(rawConfig.acceptedTypes) && rawConfig.acceptedTypes.length
    ? rawConfig.acceptedTypes.map(String)
    : DEFAULT_ACCEPTED_TYPES,
  embedded: rawConfig.embedded === true || query.get("embed") === "1",
  // The pages that may frame the widget and speak to it (WIDGET_ALLOWED_ORIGINS, and this
  // origin itself): only they may set the greeting, the title, metadata or a prefilled question.
  hostOrigins: [window.location.origin, ...originList(rawConfig.allowedOrigins)],
  // The assistant's name from the server (the active assistant profile).
  title: stringOrNull(rawConfig.title),
  brandColor: stringOrNull(query.get("color")) || stringOrNull(rawConfig.brandColor),
  replyTimeoutMs: positiveNumber(rawConfig.replyTimeoutSeconds, 90) * 1000,
};

// Citations' links (/kb/<slug>/#anchor) are relative to it: they are made absolute against it, so
// that they open the platform's article wherever the widget is shown.
config.platformOrigin = originOf(config.apiBase);

// Set by the embedding page through the bridge; null means the default text of the locale.
export const hostSettings = {
  greeting: null,
  title: null,
};
