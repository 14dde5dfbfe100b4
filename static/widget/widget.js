/*
 * Customer chat widget: the full-page chat at /chat/ and the same page inside the embed iframe.
 *
 * Plain browser JavaScript in ES modules, with no build step: this entry point is loaded with
 * <script type="module"> and imports the parts from ./chat/ by relative URL (collectstatic keeps
 * the names, so the URLs resolve the same in development and production). The parts rely on the
 * vendored classic scripts window.markdownit and window.DOMPurify (static/vendor/) and on the
 * public contract in DESIGN.md: the widget REST API under config.apiBase and the websocket frames
 * on ws_path.
 *
 *   chat/config.js      configuration from the page, the query string and the browser
 *   chat/messages.js    the sentences in English and Simplified Chinese
 *   chat/dom.js         element and icon builders, ids, dates, URLs
 *   chat/storage.js     what is remembered between page views
 *   chat/markdown.js    Markdown rendering and the sanitiser
 *   chat/state.js       the chat's state (the websocket's is socket.js's own)
 *   chat/ui.js          the page's frame: header, banner, notices, announcer, lightbox
 *   chat/transcript.js  entries and how they are drawn, reply timers
 *   chat/tools.js       the status lines of the business tools a reply calls
 *   chat/api.js         the REST calls
 *   chat/identity.js    the host page's verified customer, and whose conversation may be shown
 *   chat/socket.js      the websocket and what each frame does
 *   chat/handoff.js     handing over to a person
 *   chat/composer.js    sending, stopping, quick entries, images
 *   chat/feedback.js    thumbs and the conversation rating (CSAT)
 *   chat/bridge.js      postMessage with embed.js on the host page
 */

import { loadQuickEntries } from "./chat/api.js";
import { handleHostMessage } from "./chat/bridge.js";
import { config, framed } from "./chat/config.js";
import { renderHandoffStatus } from "./chat/handoff.js";
import { holdVerifiedConversation } from "./chat/identity.js";
import { connect, connectionState, watchConnectivity } from "./chat/socket.js";
import { loadConversationState, state } from "./chat/state.js";
import { renderAll } from "./chat/transcript.js";
import { applyBrandColor, buildInterface, ui, updateHeader } from "./chat/ui.js";

function start() {
  applyBrandColor();
  buildInterface();
  window.addEventListener("message", handleHostMessage);
  watchConnectivity();
  // A conversation opened for a verified customer waits for the host page to name the same one.
  holdVerifiedConversation();
  loadConversationState();
  renderAll();
  updateHeader();
  // A handoff remembered from before the reload shows its waiting bar now, not once the socket is
  // ready (nor never, when it cannot connect).
  renderHandoffStatus();
  loadQuickEntries();
  if (state.conversation) connect();
  if (framed) window.parent.postMessage({ source: "cs-widget", type: "widget.ready", payload: null }, "*");
  if (!config.embedded && window.matchMedia("(pointer: fine)").matches) ui.input.focus();
  // A hook for the browser tests: the internals of this page, read-only.
  window.__csWidget = { config, state, get connection() { return connectionState(); } };
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
