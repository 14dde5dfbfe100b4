/*
 * The embed bridge: postMessage between this page in its iframe and embed.js on the host page.
 * Only a parent whose origin the server allows (WIDGET_ALLOWED_ORIGINS) is listened to.
 */

import { prefill } from "./composer.js";
import { config, framed, hostSettings, stringOrNull } from "./config.js";
import { cleanCustomer, settleCustomer } from "./identity.js";
import { reconnectNow } from "./socket.js";
import { state } from "./state.js";
import { renderAll } from "./transcript.js";
import { ui, updateTitle } from "./ui.js";

export const bridge = {
  parentOrigin: null,
  isOpen: !(config.embedded && framed),
  queue: [],
  post(type, payload) {
    if (!framed) return;
    if (!this.parentOrigin) {
      if (this.queue.length < 50) this.queue.push({ type, payload });
      return;
    }
    window.parent.postMessage({ source: "cs-widget", type, payload }, this.parentOrigin);
  },
  emit(name, detail) {
    this.post(name, detail);
  },
  requestClose() {
    this.post("widget.close", null);
  },
  noteIncoming() {
    if (this.isOpen && document.visibilityState === "visible") return;
    state.unread += 1;
    this.post("widget.unread", { count: state.unread });
  },
  flush() {
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) this.post(item.type, item.payload);
  },
};

// Only the page that frames us may command the widget, and only if the server lists its origin
// (WIDGET_ALLOWED_ORIGINS): a page opened directly, or framed by anyone else, keeps its defaults.
export function handleHostMessage(event) {
  if (!framed || event.source !== window.parent) return;
  if (!config.hostOrigins.includes(event.origin)) return;
  const data = event.data;
  if (!data || typeof data !== "object" || data.source !== "cs-widget" || typeof data.type !== "string") return;
  if (!bridge.parentOrigin) {
    bridge.parentOrigin = event.origin;
    bridge.flush();
  } else if (event.origin !== bridge.parentOrigin) {
    return;
  }
  const payload = data.payload;
  switch (data.type) {
    case "host.hello":
      if (payload && typeof payload === "object") {
        // First: whose conversation may be shown, before the socket is opened below.
        settleCustomer(cleanCustomer(payload.customer));
        applyHostSettings(payload);
        if (payload.metadata && typeof payload.metadata === "object") state.metadata = cleanMetadata(payload.metadata);
        if (typeof payload.prefill === "string") prefill(payload.prefill);
        if (payload.open) openedByHost();
      }
      break;
    case "open":
      openedByHost();
      break;
    case "close":
      bridge.isOpen = false;
      break;
    case "prefill":
      prefill(typeof payload === "string" ? payload : payload && payload.text);
      break;
    case "setMetadata":
      // Sent with the conversation when it is created; an existing conversation keeps its own.
      if (payload && typeof payload === "object") state.metadata = cleanMetadata(payload);
      break;
    default:
      break;
  }
}

// The greeting and the assistant's name chosen by the embedding site (embed.js's data-greeting
// and data-title), sent with host.hello.
export function applyHostSettings(payload) {
  const greeting = stringOrNull(payload.greeting);
  const title = stringOrNull(payload.title);
  if (greeting === hostSettings.greeting && title === hostSettings.title) return;
  hostSettings.greeting = greeting;
  hostSettings.title = title;
  updateTitle();
  renderAll();
}

export function openedByHost() {
  bridge.isOpen = true;
  state.unread = 0;
  bridge.post("widget.unread", { count: 0 });
  if (window.matchMedia("(pointer: fine)").matches) ui.input.focus({ preventScroll: true });
  reconnectNow();
}

export function cleanMetadata(value) {
  try {
    const copy = JSON.parse(JSON.stringify(value));
    return copy && typeof copy === "object" && !Array.isArray(copy) ? copy : {};
  } catch (error) {
    return {};
  }
}
