/*
 * Feedback: thumbs on a reply (with a comment for a thumbs-down) and the 1–5 rating (CSAT) of a
 * conversation, this one over the socket or an earlier one over REST.
 */

import { postCsat } from "./api.js";
import { CSAT_PROMPT_AFTER_REPLIES } from "./config.js";
import { h, icon } from "./dom.js";
import { strings, t } from "./messages.js";
import { sendOrQueue } from "./socket.js";
import { state } from "./state.js";
import { conversationKey, storage } from "./storage.js";
import { addLocalNotice, findById, renderEntry, scrollToBottom } from "./transcript.js";
import { showNotice, ui } from "./ui.js";

export function renderFeedbackButtons(entry) {
  const rating = state.feedback[String(entry.id)];
  const group = h("div", { class: "cs-feedback", role: "group", "aria-label": `${t("helpful")} / ${t("notHelpful")}` });
  const up = h("button", {
    type: "button", class: "cs-feedback__button", testid: "feedback-up", "aria-label": t("helpful"), title: t("helpful"),
    "aria-pressed": rating === 1 ? "true" : "false", onclick: () => giveFeedback(entry, 1),
  }, icon("thumbUp"));
  const down = h("button", {
    type: "button", class: "cs-feedback__button", testid: "feedback-down", "aria-label": t("notHelpful"), title: t("notHelpful"),
    "aria-pressed": rating === -1 ? "true" : "false", onclick: () => giveFeedback(entry, -1),
  }, icon("thumbDown"));
  group.append(up, down);
  if (entry.feedbackThanks) group.append(h("span", { class: "cs-feedback__thanks", testid: "feedback-thanks", text: t("feedbackThanks") }));
  return group;
}

export function renderFeedbackComment(entry) {
  const textarea = h("textarea", {
    class: "cs-textarea", rows: "2", testid: "feedback-comment", placeholder: t("feedbackPlaceholder"),
    "aria-label": t("feedbackQuestion"), maxlength: "2000",
  });
  textarea.value = entry.feedbackDraft || "";
  textarea.addEventListener("input", () => {
    entry.feedbackDraft = textarea.value;
  });
  const form = h("form", { class: "cs-feedback-comment" },
    h("label", { class: "cs-feedback-comment__label", text: t("feedbackQuestion") }),
    textarea,
    h("div", { class: "cs-feedback-comment__actions" },
      h("button", {
        type: "button", class: "cs-button cs-button--quiet", onclick: () => {
          entry.feedbackOpen = false;
          renderEntry(entry);
        },
      }, t("feedbackSkip")),
      h("button", { type: "submit", class: "cs-button cs-button--primary", testid: "feedback-comment-submit" }, t("feedbackSend"))));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const comment = textarea.value.trim();
    entry.feedbackOpen = false;
    entry.feedbackDraft = "";
    if (comment) sendOrQueue({ type: "feedback", message_id: entry.id, rating: -1, comment });
    renderEntry(entry);
  });
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      entry.feedbackOpen = false;
      renderEntry(entry);
    }
  });
  entry.feedbackTextarea = textarea;
  return form;
}

export function giveFeedback(entry, rating) {
  if (entry.id == null) return;
  state.feedback[String(entry.id)] = rating;
  if (state.conversation) storage.set(conversationKey("feedback", state.conversation.id), state.feedback);
  state.lastFeedbackEntry = entry;
  entry.feedbackThanks = false;
  entry.feedbackOpen = rating === -1;
  sendOrQueue({ type: "feedback", message_id: entry.id, rating, comment: "" });
  renderEntry(entry);
  if (entry.feedbackOpen && entry.feedbackTextarea) entry.feedbackTextarea.focus();
}

export function onFeedbackSaved(frame) {
  const entry = findById(frame.message_id) || state.lastFeedbackEntry;
  if (!entry) return;
  entry.feedbackThanks = true;
  // Only the label changes: re-rendering would disturb a comment being typed.
  const group = entry.element && entry.element.querySelector(".cs-feedback");
  if (group && !group.querySelector(".cs-feedback__thanks")) {
    group.append(h("span", { class: "cs-feedback__thanks", testid: "feedback-thanks", text: t("feedbackThanks") }));
  }
}

export function maybeOfferCsat() {
  if (state.csatDone || state.csatPromptShown) return;
  if (state.completedRepliesThisVisit < CSAT_PROMPT_AFTER_REPLIES) return;
  showCsatPrompt(false);
  ui.transcriptInner.append(state.csatPromptElement);
  scrollToBottom(false);
}

export function showCsatPrompt(previous) {
  state.csatPromptShown = true;
  const stars = [1, 2, 3, 4, 5].map((score) => h("button", {
    type: "button", class: "cs-star cs-star--small", testid: "csat-prompt-star", "data-score": String(score),
    "aria-label": strings.csatStars[score - 1],
    onclick: () => openCsatDialog(previous ? state.previousConversation : null, score),
  }, icon("star")));
  state.csatPromptElement = h("div", { class: "cs-csat-prompt", testid: "csat-prompt" },
    h("p", { text: previous ? t("csatPromptPrevious") : t("csatPrompt") }),
    h("div", { class: "cs-stars", role: "group", "aria-label": previous ? t("csatPromptPrevious") : t("csatPrompt") }, stars),
    h("button", {
      type: "button", class: "cs-csat-prompt__close", "aria-label": t("dismiss"),
      onclick: () => hideCsatPrompt(),
    }, icon("close")));
}

export function hideCsatPrompt() {
  if (state.csatPromptElement) state.csatPromptElement.remove();
  state.csatPromptElement = null;
}

export function buildCsatDialog() {
  ui.csatStars = [1, 2, 3, 4, 5].map((score) => h("button", {
    type: "button", class: "cs-star", testid: "csat-star", "data-score": String(score),
    role: "radio", "aria-checked": "false", "aria-label": strings.csatStars[score - 1], tabindex: score === 1 ? "0" : "-1",
    onclick: () => setCsatScore(score),
  }, icon("star")));
  ui.csatScaleLabel = h("p", { class: "cs-csat__scale", "aria-hidden": "true" });
  ui.csatComment = h("textarea", {
    class: "cs-textarea", id: "cs-csat-comment", rows: "3", testid: "csat-comment", maxlength: "2000",
  });
  ui.csatSubmit = h("button", { type: "submit", class: "cs-button cs-button--primary", testid: "csat-submit", disabled: true }, t("csatSubmit"));
  ui.csatTitle = h("h2", { class: "cs-dialog__title", id: "cs-csat-title" });
  const starGroup = h("div", { class: "cs-stars cs-stars--large", role: "radiogroup", "aria-labelledby": "cs-csat-title" }, ui.csatStars);
  starGroup.addEventListener("keydown", (event) => {
    const current = ui.csatScore || 0;
    let next = null;
    if (event.key === "ArrowRight" || event.key === "ArrowUp") next = Math.min(5, current + 1);
    if (event.key === "ArrowLeft" || event.key === "ArrowDown") next = Math.max(1, current - 1);
    if (next) {
      event.preventDefault();
      setCsatScore(next);
      ui.csatStars[next - 1].focus();
    }
  });
  ui.csatForm = h("form", { class: "cs-dialog__body", method: "dialog" },
    h("button", { type: "button", class: "cs-dialog__close", "aria-label": t("dismiss"), onclick: () => closeCsatDialog() }, icon("close")),
    ui.csatTitle,
    h("p", { class: "cs-dialog__intro", text: t("csatIntro") }),
    starGroup,
    ui.csatScaleLabel,
    h("label", { class: "cs-field-label", for: "cs-csat-comment", text: t("csatCommentLabel") }),
    ui.csatComment,
    h("div", { class: "cs-dialog__actions" },
      h("button", { type: "button", class: "cs-button cs-button--quiet", testid: "csat-cancel", onclick: () => closeCsatDialog() }, t("csatCancel")),
      ui.csatSubmit));
  ui.csatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    submitCsat();
  });
  ui.csatDialog = h("dialog", { class: "cs-dialog", testid: "csat-dialog", "aria-labelledby": "cs-csat-title" }, ui.csatForm);
  ui.csatDialog.addEventListener("click", (event) => {
    if (event.target === ui.csatDialog) closeCsatDialog();
  });
  ui.csatDialog.addEventListener("cancel", () => {
    ui.csatTarget = null;
  });
}

export function setCsatScore(score) {
  ui.csatScore = score;
  ui.csatStars.forEach((star, index) => {
    const on = index < score;
    star.classList.toggle("is-on", on);
    star.setAttribute("aria-checked", index === score - 1 ? "true" : "false");
    star.tabIndex = index === score - 1 ? 0 : -1;
  });
  ui.csatScaleLabel.textContent = strings.csatScale[score - 1];
  ui.csatSubmit.disabled = false;
}

export function openCsatDialog(targetConversation, presetScore) {
  const target = targetConversation || state.conversation;
  if (!target) return;
  ui.csatTarget = target;
  ui.csatTitle.textContent = targetConversation && targetConversation !== state.conversation ? t("csatPreviousTitle") : t("csatTitle");
  ui.csatComment.value = "";
  ui.csatScore = 0;
  ui.csatStars.forEach((star, index) => {
    star.classList.remove("is-on");
    star.setAttribute("aria-checked", "false");
    star.tabIndex = index === 0 ? 0 : -1;
  });
  ui.csatScaleLabel.textContent = "";
  ui.csatSubmit.disabled = true;
  if (presetScore) setCsatScore(presetScore);
  ui.csatReturnFocus = document.activeElement;
  if (typeof ui.csatDialog.showModal === "function") ui.csatDialog.showModal();
  else ui.csatDialog.setAttribute("open", "");
  (presetScore ? ui.csatComment : ui.csatStars[0]).focus();
}

export function closeCsatDialog() {
  ui.csatTarget = null;
  if (ui.csatDialog.open) {
    if (typeof ui.csatDialog.close === "function") ui.csatDialog.close();
    else ui.csatDialog.removeAttribute("open");
  }
  if (ui.csatReturnFocus && ui.csatReturnFocus.isConnected) ui.csatReturnFocus.focus();
}

export function submitCsat() {
  const target = ui.csatTarget;
  const score = ui.csatScore;
  if (!target || !score) return;
  const frame = { type: "csat", score, comment: ui.csatComment.value.trim() };
  ui.csatSubmit.disabled = true;
  if (state.conversation && target.id === state.conversation.id) {
    sendOrQueue(frame);
    closeCsatDialog();
    ui.csatSubmit.disabled = false;
    return;
  }
  // The previous conversation: its socket is closed, so the rating goes over REST with its token.
  postCsat(target, { score: frame.score, comment: frame.comment }).then(() => {
    state.previousConversation = null;
    hideCsatPrompt();
    addLocalNotice(t("csatThanks"));
  }, () => showNotice(t("replyErrors.unknown")));
  closeCsatDialog();
  ui.csatSubmit.disabled = false;
}

export function onCsatSaved() {
  state.csatDone = true;
  if (state.conversation) storage.set(conversationKey("csat", state.conversation.id), true);
  hideCsatPrompt();
  addLocalNotice(t("csatThanks"));
}
