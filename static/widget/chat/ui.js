/*
 * The page's frame: the elements every part draws into (ui), the header, the connection banner,
 * notices, the aria-live announcer, the brand colour and the image lightbox.
 */

import { bridge } from "./bridge.js";
import { cancelReply, startNewConversation, wireComposer } from "./composer.js";
import { NOTICE_HIDE_MS, config, framed } from "./config.js";
import { h, icon } from "./dom.js";
import { buildCsatDialog, openCsatDialog } from "./feedback.js";
import { renderHandoffStatus, requestHandoff } from "./handoff.js";
import { assistantTitle, t } from "./messages.js";
import { isConnected } from "./socket.js";
import { state } from "./state.js";
import { updateQueuedNotes } from "./transcript.js";

export const ui = {};

export function applyBrandColor() {
  const root = document.documentElement;
  const color = config.brandColor;
  if (!color || !(window.CSS && CSS.supports && CSS.supports("color", color))) return;
  root.style.setProperty("--cs-brand", color);
  const rgb = colorToRgb(color);
  if (rgb) {
    const luminance = relativeLuminance(rgb);
    // Dark text on light brand colours, white text otherwise (WCAG contrast).
    const whiteContrast = 1.05 / (luminance + 0.05);
    const darkContrast = (luminance + 0.05) / 0.0625;
    root.style.setProperty("--cs-on-brand", whiteContrast >= darkContrast ? "#ffffff" : "#111827");
    // On white surfaces use a darker variant of a light brand colour for text and icons.
    if (luminance > 0.4) root.style.setProperty("--cs-brand-ink", "color-mix(in srgb, var(--cs-brand) 45%, #111827)");
  }
}

function colorToRgb(color) {
  const probe = document.createElement("span");
  probe.style.color = color;
  probe.style.display = "none";
  document.body.append(probe);
  const computed = getComputedStyle(probe).color;
  probe.remove();
  const match = computed.match(/rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)/);
  return match ? [Number(match[1]), Number(match[2]), Number(match[3])] : null;
}

function relativeLuminance(rgb) {
  const [r, g, b] = rgb.map((channel) => {
    const value = channel / 255;
    return value <= 0.03928 ? value / 12.92 : ((value + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

export function buildInterface() {
  const root = document.getElementById("cs-widget-root") || document.body.appendChild(h("main", { id: "cs-widget-root" }));
  document.documentElement.lang = config.locale;
  document.title = assistantTitle();
  root.classList.add("cs-root");
  if (config.embedded) document.body.classList.add("cs-body--embedded");

  // Header
  ui.subtitle = h("p", { class: "cs-header__subtitle" });
  ui.statusDot = h("span", { class: "cs-status-dot", "aria-hidden": "true" });
  ui.newButton = h("button", {
    type: "button", class: "cs-header-button", testid: "new-conversation",
    "aria-label": t("newConversation"), title: t("newConversation"), onclick: () => startNewConversation(),
  }, icon("plus"), h("span", { class: "cs-header-button__text", text: t("newConversation") }));
  ui.csatButton = h("button", {
    type: "button", class: "cs-header-button", testid: "csat-open",
    "aria-label": t("rateConversation"), title: t("rateConversation"), onclick: () => openCsatDialog(null),
  }, icon("star"), h("span", { class: "cs-header-button__text", text: t("rate") }));
  ui.handoffButton = h("button", {
    type: "button", class: "cs-header-button cs-header-button--strong", testid: "handoff-button",
    onclick: () => requestHandoff("customer_request"),
  }, icon("headset"), h("span", { class: "cs-header-button__text cs-header-button__text--long" }),
  h("span", { class: "cs-header-button__text cs-header-button__text--short", "aria-hidden": "true" }));
  const headerActions = h("div", { class: "cs-header__actions" }, ui.newButton, ui.csatButton, ui.handoffButton);
  if (config.embedded && framed) {
    headerActions.append(h("button", {
      type: "button", class: "cs-header-button cs-header-button--icon", testid: "close-button",
      "aria-label": t("closeChat"), title: t("closeChat"), onclick: () => bridge.requestClose(),
    }, icon("close")));
  }
  const header = ui.header = h("header", { class: "cs-header" },
    h("div", { class: "cs-header__identity" },
      h("div", { class: "cs-avatar cs-avatar--assistant cs-avatar--large", "aria-hidden": "true" }, icon("sparkle"), ui.statusDot),
      h("div", { class: "cs-header__titles" },
        ui.title = h("h1", { class: "cs-header__title", text: assistantTitle() }),
        ui.subtitle)),
    headerActions);

  // Quick entries (a sidebar on wide screens, chips above the composer on narrow ones)
  ui.faqList = h("ul", { class: "cs-faq__list", "aria-label": t("quickEntriesTitle") });
  ui.faq = h("nav", { class: "cs-faq", "aria-labelledby": "cs-faq-title", hidden: true },
    h("div", { class: "cs-faq__heading" },
      h("h2", { class: "cs-faq__title", id: "cs-faq-title", text: t("quickEntriesTitle") }),
      h("p", { class: "cs-faq__hint", text: t("quickEntriesHint") })),
    ui.faqList);

  // Conversation
  ui.banner = h("div", { class: "cs-banner", testid: "connection-banner", role: "status", hidden: true },
    h("span", { class: "cs-spinner", "aria-hidden": "true" }), h("span", { class: "cs-banner__text" }));
  ui.transcript = h("div", {
    class: "cs-transcript", role: "region", "aria-label": t("conversationLabel"), tabindex: "0",
  });
  ui.transcriptInner = h("div", { class: "cs-transcript__inner" });
  // Outside transcriptInner, which renderAll rebuilds: it stays below the last message.
  ui.agentTypingText = h("span", { class: "cs-agent-typing__text" });
  ui.agentTyping = h("div", { class: "cs-agent-typing", testid: "agent-typing", role: "status", hidden: true },
    h("span", { class: "cs-thinking cs-thinking--agent", "aria-hidden": "true" }, h("span"), h("span"), h("span")),
    ui.agentTypingText);
  ui.transcript.append(ui.transcriptInner, ui.agentTyping);
  // While the customer waits for a person: where they stand in the queue, or when the team is back.
  ui.handoffStatusTitle = h("p", { class: "cs-handoff-status__title", testid: "handoff-status-title" });
  ui.handoffStatusText = h("p", { class: "cs-handoff-status__text", testid: "handoff-status-text" });
  ui.handoffStatusTicket = h("p", { class: "cs-handoff-status__ticket", testid: "handoff-status-ticket" });
  ui.handoffStatus = h("div", { class: "cs-handoff-status", testid: "handoff-status", role: "status", hidden: true },
    h("span", { class: "cs-handoff-status__icon", "aria-hidden": "true" }, icon("headset")),
    h("div", { class: "cs-handoff-status__body" }, ui.handoffStatusTitle, ui.handoffStatusText, ui.handoffStatusTicket));
  ui.stopButton = h("button", {
    type: "button", class: "cs-stop", testid: "stop-button", hidden: true, onclick: () => cancelReply(),
  }, icon("stop"), h("span", { text: t("stop") }));
  ui.dropOverlay = h("div", { class: "cs-drop", hidden: true, "aria-hidden": "true" },
    h("div", { class: "cs-drop__box" }, icon("image"), h("span", { text: t("dropHere") })));
  ui.live = h("div", { class: "cs-visually-hidden", "aria-live": "polite", "aria-atomic": "true", testid: "live-region" });
  ui.conversation = h("section", { class: "cs-conversation" },
    ui.banner, ui.handoffStatus, ui.transcript, ui.stopButton, ui.dropOverlay, ui.live);

  // Composer
  ui.notice = h("div", { class: "cs-notice", testid: "error-notice", role: "alert", hidden: true },
    icon("alert"), h("span", { class: "cs-notice__text" }),
    h("button", { type: "button", class: "cs-notice__close", "aria-label": t("dismiss"), onclick: () => hideNotice() }, icon("close")));
  ui.drafts = h("ul", { class: "cs-drafts", hidden: true, "aria-label": t("attach") });
  ui.input = h("textarea", {
    class: "cs-input", testid: "composer-input", rows: "1", id: "cs-composer-input",
    placeholder: t("composerPlaceholder"), "aria-label": t("composerLabel"), enterkeyhint: "send",
    maxlength: "8000",
  });
  ui.fileInput = h("input", {
    type: "file", class: "cs-visually-hidden", testid: "file-input", multiple: true, tabindex: "-1",
    accept: config.acceptedTypes.join(","), "aria-hidden": "true",
  });
  ui.attachButton = h("button", {
    type: "button", class: "cs-icon-button", testid: "attach-button",
    "aria-label": t("attach"), title: t("attach"), onclick: () => ui.fileInput.click(),
  }, icon("attach"));
  ui.sendButton = h("button", {
    type: "submit", class: "cs-send", testid: "send-button", "aria-label": t("send"), title: t("send"),
  }, icon("send"));
  ui.composerStatus = h("p", { class: "cs-composer__status", "aria-live": "polite" });
  ui.form = h("form", { class: "cs-composer__box", novalidate: true },
    ui.drafts,
    h("div", { class: "cs-composer__row" }, ui.attachButton, ui.input, ui.sendButton),
    ui.fileInput);
  ui.composer = h("div", { class: "cs-composer" }, ui.notice, ui.form,
    h("div", { class: "cs-composer__footer" }, ui.composerStatus, h("p", { class: "cs-composer__hint", text: t("composerHint") })));

  ui.app = h("div", { class: "cs-app" + (config.embedded ? " cs-app--embedded" : "") },
    header, ui.faq, ui.conversation, ui.composer);

  buildCsatDialog();
  buildLightbox();

  root.replaceChildren(ui.app, ui.csatDialog, ui.lightbox);
  root.removeAttribute("aria-busy");

  wireComposer();
  updateHeader();
  renderHandoffStatus();
}

// The assistant's name in the page title and the header (it may change once the host page says hello).
export function updateTitle() {
  document.title = assistantTitle();
  if (ui.title) ui.title.textContent = assistantTitle();
}

export function updateHeader() {
  const handoff = state.handoff;
  const handoffText = ui.handoffButton.querySelector(".cs-header-button__text--long");
  const handoffShortText = ui.handoffButton.querySelector(".cs-header-button__text--short");
  handoffShortText.textContent = handoff ? t("waitingForPersonShort") : t("talkToPersonShort");
  if (handoff) {
    ui.handoffButton.disabled = true;
    handoffText.textContent = t("waitingForPerson");
    ui.handoffButton.setAttribute("aria-label", t("waitingForPerson"));
    ui.handoffButton.title = t("waitingForPerson");
    ui.header.classList.add("is-handoff");
    ui.subtitle.textContent = handoff.agentName
      ? t("subtitleAgent", { name: handoff.agentName })
      : t("subtitleWaiting");
  } else {
    ui.handoffButton.disabled = false;
    handoffText.textContent = t("talkToPerson");
    ui.handoffButton.setAttribute("aria-label", t("talkToPerson"));
    ui.handoffButton.title = t("talkToPerson");
    ui.header.classList.remove("is-handoff");
    ui.subtitle.textContent = t("subtitleAi");
  }
  ui.statusDot.classList.toggle("is-offline", Boolean(state.conversation) && !isConnected());
  ui.csatButton.disabled = !state.conversation;
}

let bannerTimer = null;

// The banner after a delay, unless it is no longer needed by then.
export function showBannerSoon(kind, delay, stillNeeded) {
  clearTimeout(bannerTimer);
  bannerTimer = window.setTimeout(() => {
    if (stillNeeded()) showBanner(kind);
  }, delay);
}

export function showBanner(kind) {
  clearTimeout(bannerTimer);
  const text = !navigator.onLine ? t("offline") : kind === "connecting" ? t("connecting") : t("reconnecting");
  ui.banner.querySelector(".cs-banner__text").textContent = text;
  ui.banner.dataset.state = kind;
  ui.banner.hidden = false;
  updateQueuedNotes();
}

export function hideBanner() {
  clearTimeout(bannerTimer);
  ui.banner.hidden = true;
}

let noticeTimer = null;

export function showNotice(text) {
  ui.notice.querySelector(".cs-notice__text").textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(hideNotice, NOTICE_HIDE_MS);
}

export function hideNotice() {
  clearTimeout(noticeTimer);
  ui.notice.hidden = true;
}

export function announce(text) {
  ui.live.textContent = "";
  // A fresh text node after a tick makes screen readers announce the same words again.
  window.setTimeout(() => {
    ui.live.textContent = text;
  }, 50);
}

export function buildLightbox() {
  ui.lightboxImage = h("img", { class: "cs-lightbox__image", alt: "" });
  ui.lightbox = h("dialog", { class: "cs-lightbox", testid: "lightbox" },
    h("button", { type: "button", class: "cs-lightbox__close", "aria-label": t("closeImage"), onclick: () => ui.lightbox.close() }, icon("close")),
    ui.lightboxImage);
  ui.lightbox.addEventListener("click", (event) => {
    if (event.target === ui.lightbox) ui.lightbox.close();
  });
}

export function openLightbox(url, alt) {
  if (!url) return;
  ui.lightboxImage.src = url;
  ui.lightboxImage.alt = alt;
  if (typeof ui.lightbox.showModal === "function") ui.lightbox.showModal();
  else window.open(url, "_blank", "noopener");
}
