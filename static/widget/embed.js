/*
 * Embeds the support chat on any site with one tag:
 *
 *   <script src="https://support.example.com/static/widget/embed.js" defer
 *           data-lang="zh-Hans" data-position="right" data-color="#0a7"
 *           data-greeting="..." data-title="..."></script>
 *
 * A site whose customer is signed in adds data-customer-id="<its id for them>" and
 * data-customer-hash="<hex HMAC-SHA256 of that id, keyed with WIDGET_IDENTITY_SECRET>", computed
 * on its server (the secret never reaches the page): the conversation is then verified, and a
 * conversation kept from another customer (or from nobody) is not reopened for this one.
 *
 * It adds a launcher bubble that opens <origin of this script>/chat/?embed=1&... in an iframe,
 * and exposes window.CSWidget: open(), close(), toggle(), prefill(text), setMetadata(object),
 * on(name, handler), off(name, handler). Events ("open", "close", "message.sent", "reply.done",
 * "handoff", "reply.error") also arrive as window CustomEvents named "cswidget:<name>".
 * Page and iframe talk through postMessage with {source: "cs-widget", type, payload}; each side
 * checks where a message comes from. The host page may also post commands to its own window:
 * window.postMessage({source: "cs-widget", type: "open"}, location.origin).
 */
(function () {
  "use strict";

  if (window.CSWidget && window.CSWidget.version) return;

  const SOURCE = "cs-widget";
  const Z_INDEX = 2147483000;
  const PHONE_QUERY = "(max-width: 480px)";
  const OPEN_STATE_KEY = "cs-widget:open";

  const script = document.currentScript
    || Array.from(document.getElementsByTagName("script")).find((element) => /\/widget\/embed(\.[\w-]+)?\.js(\?|$)/.test(element.src));
  if (!script || !script.src) return;

  const scriptUrl = new URL(script.src, window.location.href);
  const widgetOrigin = scriptUrl.origin;
  const data = script.dataset;
  const lang = normalizeLocale(data.lang) || normalizeLocale((navigator.languages && navigator.languages[0]) || navigator.language) || "en";
  const position = data.position === "left" ? "left" : "right";
  const color = data.color && window.CSS && CSS.supports("color", data.color) ? data.color : null;
  // Sent in host.hello (to the widget's origin only), never in the frame's URL: not in its logs or history.
  const customer = data.customerId ? { id: data.customerId, hash: data.customerHash || "" } : null;

  const LABELS = {
    en: { open: "Chat with us", close: "Close chat", frameTitle: "Customer support chat", unread: "{count} new" },
    "zh-Hans": { open: "联系客服", close: "关闭客服窗口", frameTitle: "在线客服", unread: "{count} 条新消息" },
  };
  const labels = LABELS[lang];

  function normalizeLocale(value) {
    if (!value || typeof value !== "string") return null;
    return value.trim().toLowerCase().startsWith("zh") ? "zh-Hans" : "en";
  }

  function frameSource() {
    let url = new URL(data.chatUrl || "/chat/", widgetOrigin);
    // The chat must live on the script's own origin: that is the origin messages are checked against.
    if (url.origin !== widgetOrigin) url = new URL("/chat/", widgetOrigin);
    url.searchParams.set("embed", "1");
    url.searchParams.set("lang", lang);
    if (color) url.searchParams.set("color", color);
    // The greeting and the title are not put in the URL: they travel in host.hello, which the
    // widget accepts only from a page on an origin in WIDGET_ALLOWED_ORIGINS.
    return url.href;
  }

  // ------------------------------------------------------------------ elements (in a shadow root)

  const host = document.createElement("div");
  host.id = "cs-widget-host";
  host.setAttribute("data-cs-widget", "");
  const shadow = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;

  const CSS_TEXT = `
    :host { all: initial; }
    *, *::before, *::after { box-sizing: border-box; }
    .launcher {
      position: fixed; bottom: 20px; ${position}: 20px; z-index: ${Z_INDEX};
      display: grid; place-items: center; width: 58px; height: 58px; padding: 0;
      border: 0; border-radius: 50%; cursor: pointer;
      background: var(--brand, #2f5bea); color: var(--on-brand, #fff);
      box-shadow: 0 6px 20px rgba(16, 24, 40, 0.24), 0 2px 6px rgba(16, 24, 40, 0.12);
      transition: transform 0.18s ease, box-shadow 0.18s ease;
      -webkit-tap-highlight-color: transparent;
    }
    .launcher:hover { transform: scale(1.05); box-shadow: 0 10px 28px rgba(16, 24, 40, 0.28); }
    .launcher:focus-visible { outline: 3px solid var(--brand, #2f5bea); outline-offset: 3px; }
    .launcher svg { width: 26px; height: 26px; fill: none; stroke: currentColor; stroke-width: 1.9;
      stroke-linecap: round; stroke-linejoin: round; transition: transform 0.2s ease, opacity 0.2s ease; }
    .launcher .icon-close { position: absolute; opacity: 0; transform: rotate(-45deg) scale(0.7); }
    .launcher[aria-expanded="true"] .icon-chat { opacity: 0; transform: rotate(45deg) scale(0.7); }
    .launcher[aria-expanded="true"] .icon-close { opacity: 1; transform: none; }
    .badge {
      position: absolute; top: -2px; right: -2px; min-width: 20px; height: 20px; padding: 0 6px;
      border: 2px solid #fff; border-radius: 999px; background: #e5484d; color: #fff;
      font: 600 11px/16px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; text-align: center;
    }
    .panel {
      position: fixed; bottom: 92px; ${position}: 20px; z-index: ${Z_INDEX};
      width: 400px; height: min(680px, calc(100vh - 116px)); max-height: calc(100vh - 116px);
      border-radius: 18px; overflow: hidden; background: #fff;
      box-shadow: 0 18px 56px rgba(16, 24, 40, 0.26), 0 4px 14px rgba(16, 24, 40, 0.10);
      opacity: 0; visibility: hidden; transform: translateY(12px) scale(0.98);
      transform-origin: bottom ${position};
      transition: opacity 0.2s ease, transform 0.2s ease, visibility 0s linear 0.2s;
    }
    .panel.is-open { opacity: 1; visibility: visible; transform: none;
      transition: opacity 0.2s ease, transform 0.2s ease, visibility 0s; }
    .panel iframe { display: block; width: 100%; height: 100%; border: 0; background: #fff; color-scheme: light; }
    .loading { position: absolute; inset: 0; display: grid; place-items: center; pointer-events: none; }
    .loading span { width: 26px; height: 26px; border: 3px solid #e4e7ec; border-top-color: var(--brand, #2f5bea);
      border-radius: 50%; animation: spin 0.8s linear infinite; }
    @keyframes spin { to { transform: rotate(360deg); } }
    @media ${PHONE_QUERY} {
      .panel { inset: 0; width: 100%; height: 100%; max-height: none; border-radius: 0; transform: translateY(24px); }
      .panel.is-open { transform: none; }
      .launcher.is-hidden-on-phone { display: none; }
    }
    @media (prefers-reduced-motion: reduce) {
      .launcher, .launcher svg, .panel, .panel.is-open { transition: none; }
    }
  `;

  function svg(paths, className) {
    const element = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    element.setAttribute("viewBox", "0 0 24 24");
    element.setAttribute("aria-hidden", "true");
    element.setAttribute("focusable", "false");
    element.setAttribute("class", className);
    for (const d of paths) {
      const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
      path.setAttribute("d", d);
      element.append(path);
    }
    return element;
  }

  function applyStyles() {
    // Constructed style sheets are not inline styles, so a strict style-src on the page allows them.
    if (shadow !== host && "adoptedStyleSheets" in shadow && typeof CSSStyleSheet === "function") {
      try {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS_TEXT);
        shadow.adoptedStyleSheets = [sheet];
        return;
      } catch (error) {
        /* fall back to a <style> element */
      }
    }
    const style = document.createElement("style");
    style.textContent = CSS_TEXT;
    shadow.append(style);
  }

  applyStyles();

  const launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.setAttribute("data-testid", "launcher");
  launcher.setAttribute("aria-label", labels.open);
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", "cs-widget-panel");
  launcher.title = labels.open;
  launcher.append(
    svg(["M21 11.5a8.4 8.4 0 0 1-9 8.4 9.7 9.7 0 0 1-3.8-.8L3 21l1.6-4.4A8 8 0 0 1 3 11.5 8.6 8.6 0 0 1 12 3a8.6 8.6 0 0 1 9 8.5Z", "M8 10.5h8M8 14h5"], "icon-chat"),
    svg(["M6 9l6 6 6-6"], "icon-close"),
  );
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.hidden = true;
  launcher.append(badge);

  const panel = document.createElement("div");
  panel.className = "panel";
  panel.id = "cs-widget-panel";
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", labels.frameTitle);

  if (color) {
    host.style.setProperty("--brand", color);
    host.style.setProperty("--on-brand", readableOn(color));
  }

  shadow.append(panel, launcher);

  function readableOn(value) {
    const probe = document.createElement("span");
    probe.style.color = value;
    probe.style.display = "none";
    document.documentElement.append(probe);
    const match = getComputedStyle(probe).color.match(/rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)/);
    probe.remove();
    if (!match) return "#ffffff";
    const [r, g, b] = match.slice(1, 4).map((channel) => {
      const c = Number(channel) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    return 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.0625 ? "#ffffff" : "#111827";
  }

  // ------------------------------------------------------------------ state

  let frame = null;
  let frameReady = false;
  let isOpen = false;
  let metadata = null;
  let pendingPrefill = null;
  const queue = [];
  const handlers = new Map();
  const phone = window.matchMedia(PHONE_QUERY);
  let savedOverflow = null;

  function post(type, payload) {
    if (!frame || !frameReady || !frame.contentWindow) {
      queue.push({ type, payload });
      return;
    }
    frame.contentWindow.postMessage({ source: SOURCE, type, payload }, widgetOrigin);
  }

  function ensureFrame() {
    if (frame) return;
    frame = document.createElement("iframe");
    frame.src = frameSource();
    frame.title = labels.frameTitle;
    frame.setAttribute("data-testid", "widget-frame");
    frame.setAttribute("allow", "clipboard-write");
    frame.setAttribute("referrerpolicy", "strict-origin-when-cross-origin");
    // Scripts and storage for the widget, new tabs for links; no navigating this page.
    frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms allow-popups allow-popups-to-escape-sandbox allow-downloads");
    const loading = document.createElement("div");
    loading.className = "loading";
    loading.append(document.createElement("span"));
    panel.append(loading, frame);
    frame.addEventListener("load", () => window.setTimeout(() => loading.remove(), 150), { once: true });
  }

  function emit(name, detail) {
    const list = handlers.get(name);
    if (list) {
      for (const handler of Array.from(list)) {
        try {
          handler(detail);
        } catch (error) {
          window.setTimeout(() => {
            throw error;
          });
        }
      }
    }
    window.dispatchEvent(new CustomEvent(`cswidget:${name}`, { detail }));
  }

  function setUnread(count) {
    const value = Number(count) || 0;
    badge.hidden = value <= 0 || isOpen;
    badge.textContent = value > 9 ? "9+" : String(value);
    launcher.setAttribute("aria-label", value > 0 && !isOpen
      ? `${labels.open} (${labels.unread.replace("{count}", String(value))})`
      : isOpen ? labels.close : labels.open);
  }

  function lockPageScroll(lock) {
    const root = document.documentElement;
    if (lock && savedOverflow === null) {
      savedOverflow = root.style.overflow;
      root.style.overflow = "hidden";
    } else if (!lock && savedOverflow !== null) {
      root.style.overflow = savedOverflow;
      savedOverflow = null;
    }
  }

  function open() {
    ensureFrame();
    if (isOpen) return;
    isOpen = true;
    panel.classList.add("is-open");
    launcher.setAttribute("aria-expanded", "true");
    launcher.title = labels.close;
    launcher.classList.add("is-hidden-on-phone");
    if (phone.matches) lockPageScroll(true);
    setUnread(0);
    remember(true);
    post("open", null);
    window.setTimeout(() => {
      if (isOpen && frame) frame.focus();
    }, 60);
    emit("open", null);
  }

  function close() {
    if (!isOpen) return;
    const focusWasInside = document.activeElement === host || (frame && document.activeElement === frame);
    isOpen = false;
    panel.classList.remove("is-open");
    launcher.setAttribute("aria-expanded", "false");
    launcher.title = labels.open;
    launcher.classList.remove("is-hidden-on-phone");
    lockPageScroll(false);
    setUnread(0);
    remember(false);
    post("close", null);
    if (focusWasInside) launcher.focus();
    emit("close", null);
  }

  function toggle() {
    if (isOpen) close();
    else open();
  }

  function prefill(text) {
    if (typeof text !== "string") return;
    pendingPrefill = text;
    if (frameReady) post("prefill", { text });
  }

  function setMetadata(value) {
    let copy = {};
    try {
      copy = JSON.parse(JSON.stringify(value || {}));
    } catch (error) {
      copy = {};
    }
    metadata = copy && typeof copy === "object" && !Array.isArray(copy) ? copy : {};
    if (frameReady) post("setMetadata", metadata);
  }

  function on(name, handler) {
    if (typeof handler !== "function") return api;
    if (!handlers.has(name)) handlers.set(name, new Set());
    handlers.get(name).add(handler);
    return api;
  }

  function off(name, handler) {
    const list = handlers.get(name);
    if (list) {
      if (handler) list.delete(handler);
      else list.clear();
    }
    return api;
  }

  function remember(value) {
    try {
      if (value) window.sessionStorage.setItem(OPEN_STATE_KEY, "1");
      else window.sessionStorage.removeItem(OPEN_STATE_KEY);
    } catch (error) {
      /* storage unavailable */
    }
  }

  function wasOpen() {
    try {
      return window.sessionStorage.getItem(OPEN_STATE_KEY) === "1";
    } catch (error) {
      return false;
    }
  }

  // ------------------------------------------------------------------ messages

  const EVENTS_FROM_WIDGET = new Set(["message.sent", "reply.done", "reply.error", "handoff"]);

  function onWidgetMessage(type, payload) {
    if (type === "widget.ready") {
      frameReady = true;
      const hello = {
        metadata, prefill: pendingPrefill, open: isOpen, greeting: data.greeting || null, title: data.title || null,
        customer,
      };
      frame.contentWindow.postMessage({ source: SOURCE, type: "host.hello", payload: hello }, widgetOrigin);
      pendingPrefill = null;
      // The frame may have finished loading after open() focused it: focus it again.
      if (isOpen) frame.focus();
      const queued = queue.splice(0, queue.length)
        .filter((item) => item.type !== "prefill" && item.type !== "setMetadata" && item.type !== "open" && item.type !== "close");
      for (const item of queued) post(item.type, item.payload);
      return;
    }
    if (type === "widget.close") {
      close();
      return;
    }
    if (type === "widget.unread") {
      if (!isOpen) setUnread(payload && payload.count);
      return;
    }
    if (EVENTS_FROM_WIDGET.has(type)) emit(type, payload === undefined ? null : payload);
  }

  function runCommand(type, payload) {
    switch (type) {
      case "open": open(); break;
      case "close": close(); break;
      case "toggle": toggle(); break;
      case "prefill": prefill(typeof payload === "string" ? payload : payload && payload.text); break;
      case "setMetadata": setMetadata(payload); break;
      default: break;
    }
  }

  window.addEventListener("message", (event) => {
    const message = event.data;
    if (!message || typeof message !== "object" || message.source !== SOURCE || typeof message.type !== "string") return;
    if (frame && event.source === frame.contentWindow) {
      // Only the widget's own origin speaks for the widget.
      if (event.origin !== widgetOrigin) return;
      onWidgetMessage(message.type, message.payload);
      return;
    }
    if (event.source === window && event.origin === window.location.origin) {
      runCommand(message.type, message.payload);
    }
  });

  launcher.addEventListener("click", toggle);

  phone.addEventListener && phone.addEventListener("change", () => {
    lockPageScroll(isOpen && phone.matches);
  });

  // ------------------------------------------------------------------ API

  const api = {
    version: "1",
    open,
    close,
    toggle,
    prefill,
    setMetadata,
    on,
    off,
    isOpen: () => isOpen,
  };

  // Calls made before this script loaded: window.CSWidget = [["setMetadata", {...}], ["open"]].
  const early = window.CSWidget;
  window.CSWidget = api;

  function mount() {
    (document.body || document.documentElement).append(host);
    if (Array.isArray(early)) {
      for (const call of early) {
        if (Array.isArray(call) && typeof api[call[0]] === "function") api[call[0]](...call.slice(1));
      }
    } else if (early && Array.isArray(early.q)) {
      for (const call of early.q) {
        if (Array.isArray(call) && typeof api[call[0]] === "function") api[call[0]](...call.slice(1));
      }
    }
    // Reopen on the next page of the same site if the customer left it open.
    if (wasOpen() && !isOpen) open();
  }

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
