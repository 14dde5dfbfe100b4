/*
 * The agent console's entry point (/agent/): reads the page's config, draws the sign-in form, the
 * refusal or the console, and routes the socket's frames to the part of the page they change.
 */

import { api, configureApi } from "./api.js";
import { assistAvailable, composerElement, composerShortcut, onAssistFrame, onSocketError, renderComposer, setSavedMessageHandler } from "./composer.js";
import {
  claimShortcut,
  markLastSeen,
  onConversationMessage,
  onConversationOpened,
  onMessageSaved,
  onReplyDelta,
  onTicketUpdated,
  onTyping,
  openConversation,
  renderConversation,
  showNotice,
} from "./conversation.js";
import { announce, h } from "./dom.js";
import { onQueueUpdated, renderQueue, selectTab, setQueueOpener, tickClocks, updateTitle, wireQueueKeys } from "./queue.js";
import { connectionState, dropConnection, isConnected, send, startSocket } from "./socket.js";
import { loadSeen, state } from "./state.js";
import { LOCALES, locale, setLocale, t } from "./strings.js";

const LOCALE_KEY = "agent-console.locale";

function readConfig() {
  const element = document.getElementById("console-config");
  try {
    return JSON.parse(element.textContent);
  } catch (error) {
    return { page: "login", locale: "en" };
  }
}

// The agent's choice (the header's switch) wins over the browser's languages, unless ?lang= says.
function chosenLocale(config) {
  const asked = new URLSearchParams(window.location.search).get("lang");
  if (LOCALES.includes(asked)) return asked;
  try {
    const saved = window.localStorage.getItem(LOCALE_KEY);
    if (LOCALES.includes(saved)) return saved;
  } catch (error) {
    /* storage unavailable */
  }
  return config.locale;
}

function languageSwitch(onChange) {
  const select = h(
    "select",
    { id: "ac-language", class: "ac-select", testid: "language-switch" },
    LOCALES.map((code) => h("option", { value: code, selected: code === locale(), text: t(`language.${code}`) })),
  );
  select.addEventListener("change", () => {
    try {
      window.localStorage.setItem(LOCALE_KEY, select.value);
    } catch (error) {
      /* the choice lasts for this page only */
    }
    setLocale(select.value);
    onChange();
    const again = document.getElementById("ac-language");
    if (again) again.focus();
  });
  return h("div", { class: "ac-language" }, h("label", { for: "ac-language", class: "ac-language__label", text: t("language.label") }), select);
}

function liveRegions() {
  return [
    h("div", { id: "ac-live", class: "ac-visually-hidden", "aria-live": "polite", testid: "live-region" }),
    h("div", { id: "ac-alert", class: "ac-visually-hidden", "aria-live": "assertive", role: "alert", testid: "alert-region" }),
  ];
}

// --- sign-in and refusal ------------------------------------------------------------------------

function drawLogin(root) {
  document.title = t("app.title");
  const error = h("p", { class: "ac-login__error", role: "alert", testid: "login-error", hidden: true });
  const username = h("input", { id: "ac-username", name: "username", autocomplete: "username", required: true, testid: "login-username" });
  const password = h("input", { id: "ac-password", name: "password", type: "password", autocomplete: "current-password", required: true, testid: "login-password" });
  const submit = h("button", { type: "submit", class: "ac-button ac-button--primary", testid: "login-submit", text: t("login.submit") });
  const form = h(
    "form",
    { class: "ac-login", testid: "login-form" },
    h("h1", { class: "ac-login__title", text: t("login.title") }),
    h("label", { for: "ac-username", text: t("login.username") }),
    username,
    h("label", { for: "ac-password", text: t("login.password") }),
    password,
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    submit.textContent = t("login.busy");
    error.hidden = true;
    try {
      await api.signIn(username.value, password.value);
      window.location.reload();
    } catch (failure) {
      error.textContent = t("login.failed", { detail: failure.detail });
      error.hidden = false;
      submit.disabled = false;
      submit.textContent = t("login.submit");
      password.select();
    }
  });
  root.replaceChildren(
    h("header", { class: "ac-header ac-header--plain" }, h("span", { class: "ac-brand", text: t("app.title") }), languageSwitch(() => drawLogin(root))),
    h("main", { class: "ac-login-page" }, form),
    ...liveRegions(),
  );
  username.focus();
}

function drawForbidden(root, config) {
  document.title = t("app.title");
  root.replaceChildren(
    h("header", { class: "ac-header ac-header--plain" }, h("span", { class: "ac-brand", text: t("app.title") }), languageSwitch(() => drawForbidden(root, config))),
    h(
      "main",
      { class: "ac-login-page" },
      h(
        "div",
        { class: "ac-login", testid: "forbidden" },
        h("h1", { class: "ac-login__title", text: t("forbidden.title") }),
        h("p", { text: t("forbidden.body", { username: config.username || "" }) }),
        h("button", { type: "button", class: "ac-button", testid: "sign-out", onclick: signOut, text: t("signOut") }),
      ),
    ),
    ...liveRegions(),
  );
}

async function signOut() {
  try {
    await api.signOut();
  } finally {
    window.location.reload();
  }
}

// --- the console --------------------------------------------------------------------------------

let connectionStatus = "connecting";

function renderConnection() {
  const element = document.getElementById("ac-connection");
  if (!element) return;
  element.dataset.state = connectionStatus;
  element.textContent = t(`connection.${connectionStatus}`);
}

function renderPresence() {
  const toggle = document.getElementById("ac-accepting");
  const online = document.getElementById("ac-online");
  if (!toggle || !online) return;
  toggle.checked = state.accepting !== false;
  toggle.disabled = state.accepting === null || !isConnected();
  online.textContent = Number.isInteger(state.onlineAgents) ? t("presence.online", { count: state.onlineAgents }) : "";
}

function shortcutsHelp() {
  return h(
    "details",
    { class: "ac-shortcuts", testid: "shortcuts" },
    h("summary", { text: t("composer.shortcuts") }),
    h(
      "ul",
      null,
      ["shortcuts.queue", "shortcuts.send", "shortcuts.canned", assistAvailable() ? "shortcuts.assist" : null, "shortcuts.note", "shortcuts.claim"]
        .filter(Boolean)
        .map((key) => h("li", { text: t(key) })),
    ),
  );
}

function drawConsole(root) {
  const presence = h("input", { id: "ac-accepting", type: "checkbox", role: "switch", testid: "presence-toggle", disabled: true });
  presence.addEventListener("change", () => {
    if (!send({ type: "presence", accepting: presence.checked })) {
      presence.checked = !presence.checked;
      showNotice(t("presence.error", { detail: t("error.network") }), { error: true });
      return;
    }
    state.presencePending = true;
  });
  root.replaceChildren(
    h("a", { href: "#ac-conversation", class: "ac-skip", text: t("app.skip") }),
    h(
      "header",
      { class: "ac-header" },
      h("h1", { class: "ac-brand", text: t("app.title") }),
      h("span", { id: "ac-connection", class: "ac-connection", testid: "connection", role: "status" }),
      h("div", { class: "ac-header__spacer" }),
      h("label", { class: "ac-presence", for: "ac-accepting" }, presence, h("span", { text: t("presence.accepting") })),
      h("span", { id: "ac-online", class: "ac-online", testid: "online-agents" }),
      languageSwitch(() => drawConsole(root)),
      h("span", { class: "ac-me", testid: "me", text: state.me ? state.me.name : "" }),
      h("button", { type: "button", class: "ac-button ac-button--quiet", testid: "sign-out", onclick: signOut, text: t("signOut") }),
    ),
    h(
      "div",
      { class: "ac-layout" },
      h(
        "nav",
        { class: "ac-queue", "aria-label": t("queue.label") },
        h("div", { id: "ac-tabs", class: "ac-tabs", role: "tablist", "aria-label": t("queue.tabs") }),
        h("p", { id: "ac-queue-help", class: "ac-visually-hidden", text: t("queue.help") }),
        h("ul", { id: "ac-queue-list", class: "ac-queue__list", role: "tabpanel", "aria-describedby": "ac-queue-help", testid: "queue-list" }),
        shortcutsHelp(),
      ),
      h(
        "main",
        { id: "ac-conversation", class: "ac-conversation", "aria-label": t("conversation.label"), tabindex: "-1" },
        h("p", { id: "ac-conversation-empty", class: "ac-conversation__empty", testid: "conversation-empty" }),
        h(
          "section",
          { id: "ac-conversation-pane", class: "ac-conversation__pane", hidden: true, testid: "conversation" },
          h("div", { id: "ac-ticket", class: "ac-ticket", testid: "ticket-header" }),
          h("p", { id: "ac-notice", class: "ac-notice", role: "status", testid: "notice", hidden: true }),
          h(
            "div",
            { id: "ac-transcript", class: "ac-transcript", testid: "transcript", tabindex: "0", role: "region", "aria-label": t("conversation.transcript") },
            h("ol", { id: "ac-messages", class: "ac-messages" }),
          ),
          h("p", { id: "ac-typing", class: "ac-typing", testid: "typing-indicator", hidden: true }),
          composerElement(),
        ),
      ),
    ),
    ...liveRegions(),
  );
  wireQueueKeys();
  renderConnection();
  renderPresence();
  renderQueue();
  renderConversation();
  updateTitle();
}

function onFrame(frame) {
  switch (frame.type) {
    case "queue.updated":
      onQueueUpdated(frame);
      return;
    case "conversation.opened":
      onConversationOpened(frame);
      return;
    case "conversation.message":
      onConversationMessage(frame);
      return;
    case "ticket.updated":
      onTicketUpdated(frame);
      return;
    case "reply.delta":
      onReplyDelta(frame);
      return;
    case "typing":
      onTyping(frame);
      return;
    case "conversation.left":
      return;
    case "presence.updated":
      state.presencePending = false;
      state.accepting = Boolean(frame.accepting);
      state.onlineAgents = Number.isInteger(frame.online_agents) ? frame.online_agents : null;
      renderPresence();
      return;
    case "conversation.assigned":
      onAssigned(frame);
      return;
    case "assist.started":
    case "assist.delta":
    case "assist.done":
    case "assist.stale":
    case "assist.error":
      onAssistFrame(frame);
      return;
    case "error":
      onError(frame);
      return;
    default:
      return;
  }
}

function onAssigned(frame) {
  announce(t("assigned.toYou"));
  showNotice(t("assigned.toYou"));
  if (!state.selected) {
    selectTab("mine", { focus: false });
    openConversation(frame.conversation);
  }
}

// Which request an `error` frame answers: the socket names none, so the one waiting for an answer.
function onError(frame) {
  if (onSocketError(frame)) return;
  if (state.presencePending) {
    state.presencePending = false;
    showNotice(t("presence.error", { detail: frame.detail || frame.code }), { error: true });
    renderPresence();
    return;
  }
  if (frame.code === "not_claimed") return; // a typing frame that raced a hand-over: nothing to show
  showNotice(t("socket.error", { detail: frame.detail || frame.code }), { error: true });
}

function onStatus(status) {
  connectionStatus = status;
  renderConnection();
  renderPresence();
  if (status !== "online") announce(t(`connection.${status}`));
  renderComposer();
}

function startConsole(root, config) {
  state.config = config;
  state.me = config.agent;
  state.supervisor = Boolean(config.supervisor);
  configureApi({ base: config.apiBase, csrfToken: config.csrfToken });
  loadSeen();
  setQueueOpener((id) => openConversation(id));
  setSavedMessageHandler(onMessageSaved);
  drawConsole(root);
  startSocket({ onFrame, onStatus });
  window.setInterval(tickClocks, 1000);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !state.selected) return;
    markLastSeen();
    updateTitle();
  });
  document.addEventListener("keydown", (event) => {
    if (composerShortcut(event)) {
      event.preventDefault();
      return;
    }
    if (event.altKey && !event.ctrlKey && !event.metaKey && event.code === "KeyC") {
      event.preventDefault();
      claimShortcut();
    }
  });
  // Hooks for the browser tests: `deliver` handles a frame as if the socket had sent it (they play
  // the contract's assist frames with it, whatever the server in front of them drafts).
  window.__agentConsole = { state, connectionState, dropConnection, deliver: onFrame };
}

function boot() {
  const root = document.getElementById("agent-console-root");
  const config = readConfig();
  setLocale(chosenLocale(config));
  configureApi({ base: config.apiBase || "/api/agent", csrfToken: config.csrfToken });
  root.removeAttribute("aria-busy");
  if (config.page === "console") startConsole(root, config);
  else if (config.page === "forbidden") drawForbidden(root, config);
  else drawLogin(root);
}

boot();
