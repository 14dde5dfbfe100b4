/*
 * The composer: typing and sending messages (and re-sending them), stopping a reply, quick
 * entries, a new conversation, and images (scaled in the browser, then uploaded).
 */

import { ApiError, ensureConversation } from "./api.js";
import { bridge } from "./bridge.js";
import { SMALL_IMAGE_BYTES, config, framed } from "./config.js";
import { h, icon, nextKey, uuid } from "./dom.js";
import { noteCustomerTyping } from "./handoff.js";
import { showCsatPrompt } from "./feedback.js";
import { formatBytes, joinSentences, strings, t } from "./messages.js";
import { disconnect, handleInvalidToken, resetConversationState, sendFrame } from "./socket.js";
import { state } from "./state.js";
import { forgetConversation } from "./storage.js";
import { appendEntry, currentStreamingReply, findAnsweredCustomerEntry, isNearBottom, makeEntry, removeEntry, renderAll, renderEntry, scrollToBottom, setStickToBottom } from "./transcript.js";
import { hideNotice, showNotice, ui, updateHeader } from "./ui.js";

export function sendMessage(text, drafts, options) {
  const entry = makeEntry({
    role: "customer",
    clientId: uuid(),
    text,
    status: "sending",
    local: true,
    attachments: drafts.map((draft) => ({
      id: draft.id, url: draft.url, previewUrl: draft.previewUrl, width: draft.width, height: draft.height,
      content_type: draft.contentType,
    })),
  });
  entry.drafts = drafts;
  entry.waitingUploads = drafts.some((draft) => draft.status !== "done");
  appendEntry(entry);
  setStickToBottom(true);
  scrollToBottom(true);
  if (options && options.retryOf) {
    options.retryOf.retried = true;
    renderEntry(options.retryOf);
  }
  deliver(entry);
  return entry;
}

export async function deliver(entry) {
  entry.sendFailed = false;
  if (entry.drafts && entry.drafts.some((draft) => draft.status !== "done" && draft.status !== "failed")) {
    entry.waitingUploads = true;
    renderEntry(entry);
    await Promise.allSettled(entry.drafts.map((draft) => draft.promise));
  }
  if (!state.entries.includes(entry)) return;
  if (entry.drafts) {
    const uploaded = entry.drafts.filter((draft) => draft.status === "done" && draft.id != null);
    entry.attachments = uploaded.map((draft) => ({
      id: draft.id, url: draft.url, previewUrl: draft.previewUrl, width: draft.width, height: draft.height,
      content_type: draft.contentType,
    }));
    entry.drafts = null;
    if (!entry.text && !entry.attachments.length) {
      removeEntry(entry);
      return;
    }
  }
  entry.waitingUploads = false;
  renderEntry(entry);
  try {
    await ensureConversation();
  } catch (error) {
    entry.sendFailed = true;
    entry.sendError = error && error.code === "rate_limited" ? strings.frameErrors.rate_limited
      : error && error.code === "invalid_identity" ? t("identityRefused") : t("createFailed");
    renderEntry(entry);
    return;
  }
  const frame = {
    type: "message",
    client_id: entry.clientId,
    text: entry.text,
    attachments: entry.attachments.map((attachment) => attachment.id).filter((id) => id != null),
  };
  state.outbox.set(entry.clientId, { frame, entry, sentAt: null });
  if (sendFrame(frame)) state.outbox.get(entry.clientId).sentAt = Date.now();
  renderEntry(entry);
}

export function resendCustomerEntry(entry) {
  // Not accepted yet, so the same client_id is safe: the server saves it at most once.
  entry.sendFailed = false;
  entry.sendError = null;
  renderEntry(entry);
  deliver(entry);
}

export function retryReply(reply) {
  const customer = findAnsweredCustomerEntry(reply);
  if (!customer) return;
  const drafts = (customer.attachments || [])
    .filter((attachment) => attachment.id != null)
    .map((attachment) => ({
      id: attachment.id, url: attachment.url, previewUrl: attachment.thumbnail_url || attachment.url,
      width: attachment.width, height: attachment.height, contentType: attachment.content_type,
      status: "done", promise: Promise.resolve(),
    }));
  sendMessage(customer.text || "", drafts, { retryOf: reply });
}

export function cancelReply() {
  const reply = currentStreamingReply();
  if (!reply || reply.replyId == null) return;
  sendFrame({ type: "cancel", reply_id: reply.replyId });
  ui.stopButton.disabled = true;
  window.setTimeout(() => {
    ui.stopButton.disabled = false;
  }, 1500);
}

export function startNewConversation() {
  const old = state.conversation;
  const hadReplies = state.entries.some((entry) => entry.role === "assistant" && entry.status === "complete" && entry.id != null)
    || state.entries.some((entry) => entry.role === "agent");
  const offerRating = old && hadReplies && !state.csatDone;
  disconnect();
  forgetConversation(old);
  resetConversationState();
  state.previousConversation = offerRating ? old : null;
  if (offerRating) showCsatPrompt(true);
  renderAll();
  hideNotice();
  ui.input.value = "";
  resizeInput();
  updateHeader();
  ui.transcript.scrollTop = 0;
  ui.input.focus();
}

export function renderQuickEntries() {
  ui.faqList.replaceChildren(...state.faq.map((entry) => h("li", null,
    h("button", {
      type: "button", class: "cs-quick-entry", testid: "quick-entry", "data-entry-id": entry.id == null ? "" : String(entry.id),
      onclick: () => sendQuestion(entry.question),
    }, h("span", { class: "cs-quick-entry__text", text: entry.question }), icon("chevron", "cs-quick-entry__chevron")))));
  ui.faq.hidden = state.faq.length === 0;
  ui.app.classList.toggle("has-faq", state.faq.length > 0);
}

export function sendQuestion(question) {
  sendMessage(question.trim(), []);
  if (window.matchMedia("(pointer: fine)").matches) ui.input.focus();
}

export function prefill(text) {
  if (typeof text !== "string") return;
  ui.input.value = text.slice(0, 8000);
  resizeInput();
  if (bridge.isOpen) ui.input.focus({ preventScroll: true });
}

export function resizeInput() {
  const input = ui.input;
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 168)}px`;
}

export function wireComposer() {
  ui.input.addEventListener("input", () => {
    resizeInput();
    noteCustomerTyping();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) return;
    // An IME composition (Chinese, Japanese…) uses Enter to confirm a candidate, not to send.
    if (event.isComposing || event.keyCode === 229 || composing) return;
    event.preventDefault();
    submitComposer();
  });
  let composing = false;
  ui.input.addEventListener("compositionstart", () => {
    composing = true;
  });
  ui.input.addEventListener("compositionend", () => {
    // Safari fires compositionend before the keydown of the confirming Enter.
    window.setTimeout(() => {
      composing = false;
    }, 0);
  });
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitComposer();
  });
  ui.fileInput.addEventListener("change", () => {
    addFiles(Array.from(ui.fileInput.files || []));
    ui.fileInput.value = "";
  });
  ui.input.addEventListener("paste", (event) => {
    const data = event.clipboardData;
    if (!data) return;
    const files = Array.from(data.files || []).filter((file) => file.type.startsWith("image/"));
    if (!files.length) return;
    if (!data.getData("text/plain")) event.preventDefault();
    addFiles(files);
  });

  let dragDepth = 0;
  const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  ui.app.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    ui.dropOverlay.hidden = false;
  });
  ui.app.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  ui.app.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) ui.dropOverlay.hidden = true;
  });
  ui.app.addEventListener("drop", (event) => {
    if (!event.dataTransfer) return;
    event.preventDefault();
    dragDepth = 0;
    ui.dropOverlay.hidden = true;
    addFiles(Array.from(event.dataTransfer.files || []));
  });

  ui.transcript.addEventListener("scroll", () => {
    setStickToBottom(isNearBottom());
  }, { passive: true });

  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    if (ui.csatDialog.open || ui.lightbox.open) return;
    if (config.embedded && framed) bridge.requestClose();
  });
}

export function submitComposer() {
  const text = ui.input.value.trim();
  const drafts = state.drafts.filter((draft) => draft.status !== "failed");
  if (!text && !drafts.length) return;
  ui.input.value = "";
  resizeInput();
  state.drafts = [];
  renderDrafts();
  sendMessage(text, drafts);
}

export function addFiles(files) {
  if (!files.length) return;
  const room = config.maxAttachments - state.drafts.length;
  if (files.length > room) showNotice(t("uploadErrors.tooMany", { max: config.maxAttachments }));
  for (const file of files.slice(0, Math.max(0, room))) addFile(file);
}

export function addFile(file) {
  const name = file.name || "image";
  const isImage = file.type ? file.type.startsWith("image/") : /\.(jpe?g|png|webp|gif|bmp|avif|heic|heif)$/i.test(name);
  if (!isImage) {
    showNotice(t("uploadErrors.wrongType", { name }));
    return;
  }
  if (file.size === 0) {
    showNotice(t("uploadErrors.empty_file", { name }));
    return;
  }
  const draft = {
    key: nextKey(), name, status: "processing", progress: 0, id: null, url: null, previewUrl: null,
    width: null, height: null, contentType: null, xhr: null, element: null,
  };
  state.drafts.push(draft);
  renderDrafts();
  draft.promise = processDraft(draft, file);
}

export async function processDraft(draft, file) {
  try {
    const prepared = await prepareImage(file);
    if (draft.status === "failed") return;
    if (prepared.blob.size > config.maxUploadBytes) {
      throw new UploadRefusal("tooLarge");
    }
    draft.blob = prepared.blob;
    draft.width = prepared.width;
    draft.height = prepared.height;
    draft.contentType = prepared.blob.type;
    draft.uploadName = prepared.name;
    draft.previewUrl = URL.createObjectURL(prepared.blob);
    draft.status = "uploading";
    renderDraft(draft);
    await ensureConversation();
    if (draft.status === "failed") return;
    const result = await uploadDraft(draft);
    draft.id = result.id;
    draft.url = result.url || null;
    draft.width = result.width || draft.width;
    draft.height = result.height || draft.height;
    draft.contentType = result.content_type || draft.contentType;
    draft.status = "done";
    renderDraft(draft);
  } catch (error) {
    if (draft.status === "failed") return;
    draft.status = "failed";
    if (!(error instanceof UploadRefusal && error.code === "aborted")) {
      showNotice(uploadErrorText(error, draft.name));
    }
    discardDraft(draft);
  }
}

export class UploadRefusal extends Error {
  constructor(code, detail) {
    super(detail || code);
    this.code = code;
    this.detail = detail;
  }
}

export function uploadErrorText(error, name) {
  const values = { name, size: formatBytes(config.maxUploadBytes), max: config.maxAttachments };
  const code = error && error.code;
  if (code && strings.uploadErrors[code]) return t(`uploadErrors.${code}`, values);
  if (error instanceof ApiError && error.status === 0) return t("uploadErrors.network", values);
  if (error && error.detail) return joinSentences(t("uploadErrors.unknown", values), error.detail);
  if (error instanceof ApiError) return t("uploadErrors.unknown", values);
  return t(error instanceof TypeError ? "uploadErrors.network" : "createFailed", values);
}

export function discardDraft(draft) {
  const index = state.drafts.indexOf(draft);
  if (index >= 0) state.drafts.splice(index, 1);
  if (draft.element) draft.element.remove();
  renderDrafts();
}

export function removeDraft(draft) {
  draft.status = "failed";
  if (draft.xhr) draft.xhr.abort();
  if (draft.previewUrl) URL.revokeObjectURL(draft.previewUrl);
  discardDraft(draft);
  ui.input.focus();
}

export async function decodeImage(file) {
  if (typeof window.createImageBitmap === "function") {
    try {
      return await window.createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (error) {
      /* fall back to <img>, which also applies the EXIF orientation */
    }
  }
  const url = URL.createObjectURL(file);
  try {
    const image = new Image();
    image.decoding = "async";
    image.src = url;
    await image.decode();
    return image;
  } finally {
    URL.revokeObjectURL(url);
  }
}

export function canvasToBlob(canvas, quality) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new UploadRefusal("corrupt_image"))), "image/jpeg", quality);
  });
}

export function jpegName(name) {
  const base = name.replace(/\.[^./\\]+$/, "") || "image";
  return `${base}.jpg`;
}

// Scale to at most maxImageSide on the long side and re-encode as JPEG; small images that
// are already acceptable are sent as they are.
export async function prepareImage(file) {
  const accepted = config.acceptedTypes.includes(file.type);
  let image;
  try {
    image = await decodeImage(file);
  } catch (error) {
    throw new UploadRefusal(accepted ? "corrupt_image" : "wrongType");
  }
  const width = image.width || image.naturalWidth;
  const height = image.height || image.naturalHeight;
  if (!width || !height) throw new UploadRefusal("corrupt_image");
  const longSide = Math.max(width, height);
  const smallEnough = file.size <= Math.min(SMALL_IMAGE_BYTES, config.maxUploadBytes);
  if (accepted && longSide <= config.maxImageSide && smallEnough) {
    if (image.close) image.close();
    return { blob: file, width, height, name: file.name || "image" };
  }
  const scale = Math.min(1, config.maxImageSide / longSide);
  const targetWidth = Math.max(1, Math.round(width * scale));
  const targetHeight = Math.max(1, Math.round(height * scale));
  const canvas = document.createElement("canvas");
  canvas.width = targetWidth;
  canvas.height = targetHeight;
  const context = canvas.getContext("2d");
  // JPEG has no transparency: paint transparent areas (PNG screenshots, stickers) white.
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, targetWidth, targetHeight);
  context.imageSmoothingQuality = "high";
  context.drawImage(image, 0, 0, targetWidth, targetHeight);
  if (image.close) image.close();
  let blob = await canvasToBlob(canvas, 0.9);
  if (blob.size > config.maxUploadBytes) blob = await canvasToBlob(canvas, 0.75);
  canvas.width = 0;
  canvas.height = 0;
  if (scale === 1 && accepted && file.size <= blob.size && file.size <= config.maxUploadBytes) {
    return { blob: file, width, height, name: file.name || "image" };
  }
  return { blob, width: targetWidth, height: targetHeight, name: jpegName(file.name || "image") };
}

export function uploadDraft(draft) {
  const conversation = state.conversation;
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    draft.xhr = request;
    request.open("POST", `${config.apiBase}/conversations/${encodeURIComponent(conversation.id)}/attachments`);
    request.setRequestHeader("Authorization", `Bearer ${conversation.token}`);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      draft.progress = event.loaded / event.total;
      updateDraftProgress(draft);
    });
    request.addEventListener("load", () => {
      draft.xhr = null;
      let body = null;
      try {
        body = JSON.parse(request.responseText);
      } catch (error) {
        body = null;
      }
      if ((request.status === 201 || request.status === 200) && body && body.id != null) {
        resolve(body);
        return;
      }
      if (request.status === 401 && state.conversation === conversation) {
        reject(new UploadRefusal("network"));
        handleInvalidToken();
        return;
      }
      const code = (body && body.code) || (request.status === 413 ? "too_large" : request.status === 429 ? "rate_limited" : null);
      reject(code ? new UploadRefusal(code, body && body.detail) : new ApiError(request.status, null, body && body.detail));
    });
    request.addEventListener("error", () => {
      draft.xhr = null;
      reject(new UploadRefusal("network"));
    });
    request.addEventListener("abort", () => {
      draft.xhr = null;
      reject(new UploadRefusal("aborted"));
    });
    const form = new FormData();
    form.append("file", draft.blob, draft.uploadName || draft.name);
    request.send(form);
  });
}

export function renderDrafts() {
  ui.drafts.hidden = state.drafts.length === 0;
  const elements = state.drafts.map((draft) => {
    if (!draft.element) renderDraft(draft);
    return draft.element;
  });
  ui.drafts.replaceChildren(...elements);
  ui.attachButton.disabled = state.drafts.length >= config.maxAttachments;
}

export function renderDraft(draft) {
  const element = draft.element || h("li", { class: "cs-draft", testid: "attachment-preview" });
  draft.element = element;
  element.dataset.status = draft.status === "done" ? "ready" : draft.status;
  const busy = draft.status === "processing" || draft.status === "uploading";
  element.setAttribute("aria-busy", busy ? "true" : "false");
  const label = draft.status === "uploading" ? t("uploading", { name: draft.name })
    : draft.status === "processing" ? t("preparing", { name: draft.name }) : draft.name;
  element.title = label;
  const children = [];
  if (draft.previewUrl) children.push(h("img", { src: draft.previewUrl, alt: draft.name }));
  else children.push(h("div", { class: "cs-draft__placeholder" }, icon("image")));
  if (busy) {
    draft.progressElement = h("div", { class: "cs-draft__progress", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
      h("span", { class: "cs-spinner cs-spinner--light", "aria-hidden": "true" }),
      h("span", { class: "cs-draft__bar" }, h("span", { class: "cs-draft__bar-fill" })));
    children.push(draft.progressElement);
  } else {
    draft.progressElement = null;
  }
  children.push(h("button", {
    type: "button", class: "cs-draft__remove", testid: "remove-attachment",
    "aria-label": t("removeAttachment", { name: draft.name }), title: t("removeAttachment", { name: draft.name }),
    onclick: () => removeDraft(draft),
  }, icon("close")));
  element.replaceChildren(...children);
  updateDraftProgress(draft);
  if (!element.isConnected && state.drafts.includes(draft)) renderDrafts();
}

export function updateDraftProgress(draft) {
  if (!draft.progressElement) return;
  const percent = Math.round((draft.progress || 0) * 100);
  draft.progressElement.setAttribute("aria-valuenow", String(percent));
  const fill = draft.progressElement.querySelector(".cs-draft__bar-fill");
  if (fill) fill.style.width = `${draft.status === "uploading" ? Math.max(percent, 4) : 0}%`;
}
