/*
 * Customer chat widget: the full-page chat at /chat/ and the same page inside the embed iframe.
 *
 * Plain browser JavaScript with no build step. It relies on the vendored globals
 * window.markdownit and window.DOMPurify (static/vendor/) and on the public contract in
 * DESIGN.md: the widget REST API under config.apiBase and the websocket frames on ws_path.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ configuration

  const STORAGE_KEY = "cs-widget:conversation";
  const SMALL_IMAGE_BYTES = 1024 * 1024;
  const DEFAULT_ACCEPTED_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif"];
  const RECENT_MESSAGE_MS = 2 * 60 * 1000;
  const CSAT_PROMPT_AFTER_REPLIES = 3;
  const NOTICE_HIDE_MS = 12000;

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

  function normalizeLocale(value) {
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

  const rawConfig = readJsonConfig();
  const query = new URLSearchParams(window.location.search);
  const framed = isFramed();

  const config = {
    apiBase: String(rawConfig.apiBase || "/api/widget").replace(/\/+$/, ""),
    locale: normalizeLocale(query.get("lang")) || normalizeLocale(rawConfig.locale) || browserLocale(),
    maxAttachments: Math.floor(positiveNumber(rawConfig.maxAttachmentsPerMessage, 4)),
    maxUploadBytes: positiveNumber(rawConfig.maxUploadBytes, 10 * 1024 * 1024),
    maxImageSide: Math.floor(positiveNumber(rawConfig.maxImageSide, 2048)),
    acceptedTypes: Array.isArray(rawConfig.acceptedTypes) && rawConfig.acceptedTypes.length
      ? rawConfig.acceptedTypes.map(String)
      : DEFAULT_ACCEPTED_TYPES,
    embedded: rawConfig.embedded === true || query.get("embed") === "1",
    // Free text from the query string is only honoured inside a frame (where the server's
    // frame-ancestors policy decides who may frame us), so that a crafted link to the full page
    // cannot put words in the company's mouth.
    greeting: stringOrNull(rawConfig.greeting) || (framed ? stringOrNull(query.get("greeting")) : null),
    title: stringOrNull(rawConfig.title) || (framed ? stringOrNull(query.get("title")) : null),
    brandColor: stringOrNull(query.get("color")) || stringOrNull(rawConfig.brandColor),
    replyTimeoutMs: positiveNumber(rawConfig.replyTimeoutSeconds, 90) * 1000,
  };

  function stringOrNull(value) {
    if (typeof value !== "string") return null;
    const trimmed = value.trim();
    return trimmed ? trimmed.slice(0, 500) : null;
  }

  // ------------------------------------------------------------------ strings

  const STRINGS = {
    en: {
      defaultTitle: "Support assistant",
      subtitleAi: "AI assistant · answers right away",
      subtitleWaiting: "Waiting for a person to join",
      subtitleAgent: "Chatting with {name}",
      defaultGreeting: "Hi there! How can I help you today? You can also send me a screenshot or a photo.",
      welcomeText: "Our AI assistant answers right away, day and night. Someone from our team can take over whenever you like.",
      newConversation: "New conversation",
      talkToPerson: "Talk to a person",
      talkToPersonShort: "Live agent",
      waitingForPerson: "Person requested",
      waitingForPersonShort: "Requested",
      rateConversation: "Rate this conversation",
      rate: "Rate",
      closeChat: "Close chat",
      quickEntriesTitle: "Common questions",
      quickEntriesHint: "Pick a question, or type your own.",
      composerLabel: "Message",
      composerPlaceholder: "Type your message…",
      composerHint: "Enter to send · Shift + Enter for a new line",
      send: "Send",
      stop: "Stop generating",
      attach: "Attach images",
      removeAttachment: "Remove {name}",
      uploading: "Uploading {name}",
      preparing: "Preparing {name}",
      thinking: "The assistant is thinking",
      connecting: "Connecting…",
      reconnecting: "Connection lost. Reconnecting…",
      offline: "You're offline. We'll send your messages when you're back online.",
      sending: "Sending…",
      queued: "Will be sent when the connection is back",
      waitingUploads: "Waiting for the images to finish uploading…",
      notSent: "Not sent.",
      retry: "Retry",
      agentLabel: "Agent",
      stopped: "Stopped",
      interrupted: "Incomplete",
      sources: "Sources",
      helpful: "Helpful",
      notHelpful: "Not helpful",
      feedbackQuestion: "What went wrong? (optional)",
      feedbackPlaceholder: "Tell us what was missing or wrong",
      feedbackSend: "Send",
      feedbackSkip: "Skip",
      feedbackThanks: "Thanks for your feedback.",
      csatTitle: "How was this conversation?",
      csatPreviousTitle: "How was your previous conversation?",
      csatIntro: "Your rating helps us improve.",
      csatCommentLabel: "Anything else you'd like to tell us? (optional)",
      csatSubmit: "Submit",
      csatCancel: "Not now",
      csatThanks: "Thanks for rating this conversation!",
      csatPrompt: "How is it going so far?",
      csatPromptPrevious: "How was your previous conversation?",
      csatStars: ["1 star: very poor", "2 stars: poor", "3 stars: okay", "4 stars: good", "5 stars: excellent"],
      csatScale: ["Very poor", "Poor", "Okay", "Good", "Excellent"],
      dismiss: "Dismiss",
      handoffRequested: "Asking for a person to join…",
      handoffStarted: "A person will join shortly.",
      handoffTicket: "Ticket {ticket}",
      agentJoined: "{name} joined the conversation.",
      someone: "An agent",
      conversationExpired: "Your earlier conversation is no longer available, so we started a new one.",
      createFailed: "We couldn't start the conversation. Please check your connection and try again.",
      errorOffer: "You can try again, or talk to a person.",
      replyErrors: {
        inference_unavailable: "The assistant isn't available right now.",
        inference_timeout: "The assistant took too long to answer.",
        inference_bad_response: "The assistant's answer came back garbled.",
        worker_lost: "The answer was interrupted.",
        rate_limited: "You're sending messages very quickly. Please wait a moment and try again.",
        timeout: "No answer has arrived.",
        interrupted: "This answer was interrupted.",
        unknown: "Something went wrong with this answer.",
      },
      frameErrors: {
        rate_limited: "You're sending messages very quickly. Please wait a moment and try again.",
        malformed: "That request couldn't be understood.",
        unknown: "Something went wrong: {detail}",
      },
      uploadErrors: {
        tooMany: "You can attach up to {max} images per message.",
        wrongType: "“{name}” isn't a supported image. Please use JPEG, PNG, WebP or GIF.",
        tooLarge: "“{name}” is too large even after shrinking it (the limit is {size}).",
        unsupported_format: "“{name}” is in a format we can't accept. Please use JPEG, PNG, WebP or GIF.",
        too_large: "“{name}” is too large (the limit is {size}).",
        too_many_pixels: "“{name}” has too many pixels. Please send a smaller image.",
        corrupt_image: "“{name}” seems to be damaged and can't be opened.",
        empty_file: "“{name}” is empty.",
        rate_limited: "Too many uploads in a short time. Please wait a moment and try again.",
        network: "“{name}” couldn't be uploaded. Please check your connection and try again.",
        unknown: "“{name}” couldn't be uploaded.",
      },
      dropHere: "Drop images to attach them",
      conversationLabel: "Conversation",
      imageAlt: "Attached image {index}",
      openImage: "Open image",
      closeImage: "Close image",
      today: "Today",
      yesterday: "Yesterday",
      announceReply: "{name} replied: {text}",
      announceAgent: "{name}: {text}",
      loadingQuestions: "Loading questions",
    },
    "zh-Hans": {
      defaultTitle: "智能客服",
      subtitleAi: "AI 助手 · 即时回复",
      subtitleWaiting: "正在为您转接人工客服",
      subtitleAgent: "{name} 正在为您服务",
      defaultGreeting: "您好！请问有什么可以帮您？也可以直接发送截图或照片给我。",
      welcomeText: "AI 助手全天候即时为您解答；如有需要，随时可以转人工客服。",
      newConversation: "新对话",
      talkToPerson: "转人工客服",
      talkToPersonShort: "转人工",
      waitingForPerson: "已申请人工",
      waitingForPersonShort: "已申请人工",
      rateConversation: "评价本次服务",
      rate: "评价",
      closeChat: "关闭对话窗口",
      quickEntriesTitle: "常见问题",
      quickEntriesHint: "点击问题即可提问，也可以直接输入。",
      composerLabel: "消息",
      composerPlaceholder: "请输入您的问题…",
      composerHint: "Enter 发送，Shift + Enter 换行",
      send: "发送",
      stop: "停止生成",
      attach: "添加图片",
      removeAttachment: "移除 {name}",
      uploading: "正在上传 {name}",
      preparing: "正在处理 {name}",
      thinking: "正在思考",
      connecting: "正在连接…",
      reconnecting: "连接已断开，正在重新连接…",
      offline: "网络已断开，恢复后会自动发送您的消息。",
      sending: "发送中…",
      queued: "网络恢复后自动发送",
      waitingUploads: "图片上传完成后将自动发送…",
      notSent: "发送失败。",
      retry: "重试",
      agentLabel: "人工客服",
      stopped: "已停止",
      interrupted: "回复未完成",
      sources: "参考资料",
      helpful: "有帮助",
      notHelpful: "没帮助",
      feedbackQuestion: "哪里不满意？（选填）",
      feedbackPlaceholder: "告诉我们缺了什么或哪里不对",
      feedbackSend: "提交",
      feedbackSkip: "跳过",
      feedbackThanks: "感谢您的反馈。",
      csatTitle: "您对本次服务满意吗？",
      csatPreviousTitle: "您对上一次对话满意吗？",
      csatIntro: "您的评价会帮助我们做得更好。",
      csatCommentLabel: "还有什么想告诉我们的吗？（选填）",
      csatSubmit: "提交评价",
      csatCancel: "暂不评价",
      csatThanks: "感谢您的评价！",
      csatPrompt: "目前的服务还满意吗？",
      csatPromptPrevious: "您对上一次对话满意吗？",
      csatStars: ["1 星：非常不满意", "2 星：不满意", "3 星：一般", "4 星：满意", "5 星：非常满意"],
      csatScale: ["非常不满意", "不满意", "一般", "满意", "非常满意"],
      dismiss: "关闭提示",
      handoffRequested: "正在为您转接人工客服…",
      handoffStarted: "已为您转接人工客服，请稍候。",
      handoffTicket: "工单号 {ticket}",
      agentJoined: "{name} 已加入对话。",
      someone: "客服人员",
      conversationExpired: "之前的对话已失效，已为您开始新的对话。",
      createFailed: "暂时无法开始对话，请检查网络后重试。",
      errorOffer: "您可以重试，或转人工客服。",
      replyErrors: {
        inference_unavailable: "智能助手暂时无法使用。",
        inference_timeout: "智能助手响应超时。",
        inference_bad_response: "智能助手的回复出现异常。",
        worker_lost: "回复中断了。",
        rate_limited: "您发送得太频繁了，请稍等片刻再试。",
        timeout: "长时间没有收到回复。",
        interrupted: "这条回复没有完成。",
        unknown: "这条回复出了点问题。",
      },
      frameErrors: {
        rate_limited: "您发送得太频繁了，请稍等片刻再试。",
        malformed: "请求无法识别。",
        unknown: "出了点问题：{detail}",
      },
      uploadErrors: {
        tooMany: "每条消息最多添加 {max} 张图片。",
        wrongType: "“{name}”不是支持的图片格式，请使用 JPEG、PNG、WebP 或 GIF。",
        tooLarge: "“{name}”压缩后仍然太大（上限 {size}）。",
        unsupported_format: "“{name}”的格式不受支持，请使用 JPEG、PNG、WebP 或 GIF。",
        too_large: "“{name}”文件太大（上限 {size}）。",
        too_many_pixels: "“{name}”分辨率过高，请发送小一些的图片。",
        corrupt_image: "“{name}”已损坏，无法打开。",
        empty_file: "“{name}”是空文件。",
        rate_limited: "上传太频繁了，请稍等片刻再试。",
        network: "“{name}”上传失败，请检查网络后重试。",
        unknown: "“{name}”上传失败。",
      },
      dropHere: "松开即可添加图片",
      conversationLabel: "对话记录",
      imageAlt: "图片附件 {index}",
      openImage: "查看大图",
      closeImage: "关闭大图",
      today: "今天",
      yesterday: "昨天",
      announceReply: "{name}回复：{text}",
      announceAgent: "{name}：{text}",
      loadingQuestions: "正在加载常见问题",
    },
  };

  const strings = STRINGS[config.locale] || STRINGS.en;

  function format(template, values) {
    return String(template).replace(/\{(\w+)\}/g, (match, name) =>
      values && values[name] != null ? String(values[name]) : match);
  }

  function t(key, values) {
    const path = key.split(".");
    let value = strings;
    for (const part of path) value = value == null ? undefined : value[part];
    if (value == null) {
      value = STRINGS.en;
      for (const part of path) value = value == null ? undefined : value[part];
    }
    return format(value == null ? key : value, values);
  }

  // Chinese sentences follow each other without a space.
  function joinSentences(...parts) {
    return parts.filter(Boolean).join(config.locale === "zh-Hans" ? "" : " ");
  }

  function formatBytes(bytes) {
    if (bytes >= 1024 * 1024) return `${Math.round((bytes / (1024 * 1024)) * 10) / 10} MB`;
    return `${Math.round(bytes / 1024)} KB`;
  }

  const title = config.title || t("defaultTitle");
  const greeting = config.greeting || t("defaultGreeting");

  // ------------------------------------------------------------------ small helpers

  function h(tag, props, ...children) {
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

  const ICONS = {
    send: "M3.4 20.4 20.85 12.9a1 1 0 0 0 0-1.8L3.4 3.6a1 1 0 0 0-1.39 1.2L4.5 12l-2.49 7.2a1 1 0 0 0 1.39 1.2ZM4.9 12h7.1",
    stop: "M7 7h10v10H7z",
    attach: "M21.44 11.05 12.25 20.24a6 6 0 0 1-8.49-8.49l9.2-9.19a4 4 0 0 1 5.65 5.66l-9.2 9.19a2 2 0 0 1-2.82-2.83l8.48-8.48",
    plus: "M12 5v14M5 12h14",
    newChat: "M12 20h9M16.5 3.5a2.12 2.12 0 0 1 3 3L7 19l-4 1 1-4Z",
    person: "M20 21v-2a4 4 0 0 0-4-4H8a4 4 0 0 0-4 4v2M12 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8Z",
    headset: "M3 18v-6a9 9 0 0 1 18 0v6M21 19a2 2 0 0 1-2 2h-1a2 2 0 0 1-2-2v-3a2 2 0 0 1 2-2h3ZM3 19a2 2 0 0 0 2 2h1a2 2 0 0 0 2-2v-3a2 2 0 0 0-2-2H3Z",
    star: "M12 2.6l2.9 5.88 6.5.95-4.7 4.58 1.1 6.47L12 17.43l-5.8 3.05 1.1-6.47-4.7-4.58 6.5-.95z",
    close: "M18 6 6 18M6 6l12 12",
    thumbUp: "M7 10v11M7 10l4-8a3 3 0 0 1 3 3v4h5.6a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18.2 21H7M7 10H4a1 1 0 0 0-1 1v9a1 1 0 0 0 1 1h3",
    thumbDown: "M17 14V3M17 14l-4 8a3 3 0 0 1-3-3v-4H4.4a2 2 0 0 1-2-2.3l1.4-8A2 2 0 0 1 5.8 3H17M17 14h3a1 1 0 0 0 1-1V4a1 1 0 0 0-1-1h-3",
    chevron: "M9 6l6 6-6 6",
    refresh: "M3 12a9 9 0 0 1 15.5-6.2L21 8M21 3v5h-5M21 12a9 9 0 0 1-15.5 6.2L3 16M3 21v-5h5",
    link: "M10 13a5 5 0 0 0 7.54.54l3-3a5 5 0 0 0-7.07-7.07l-1.72 1.71M14 11a5 5 0 0 0-7.54-.54l-3 3a5 5 0 0 0 7.07 7.07l1.71-1.71",
    alert: "M12 9v4M12 17h.01M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0Z",
    sparkle: "M12 3l1.9 5.1L19 10l-5.1 1.9L12 17l-1.9-5.1L5 10l5.1-1.9zM19 15l.9 2.1L22 18l-2.1.9L19 21l-.9-2.1L16 18l2.1-.9z",
    image: "M21 15l-5-5L5 21M3 5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2v14a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2ZM8.5 10a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3Z",
    wifiOff: "M2 2l20 20M8.5 16.5a5 5 0 0 1 7 0M5 13a10 10 0 0 1 5.2-2.8M19 13a10 10 0 0 0-2.2-1.6M2 8.8a15 15 0 0 1 4.2-2.6M22 8.8A15 15 0 0 0 10.7 5M12 20h.01",
  };

  function icon(name, extraClass) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "cs-icon" + (extraClass ? " " + extraClass : ""));
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    return svg;
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  let keyCounter = 0;
  function nextKey() {
    keyCounter += 1;
    return `k${keyCounter}`;
  }

  // localStorage can be missing or throw (private modes, blocked third-party storage): fall
  // back to memory, so that the chat still works for this page view.
  const memoryStorage = new Map();
  const storage = {
    get(key) {
      let raw = null;
      try {
        raw = window.localStorage.getItem(key);
      } catch (error) {
        raw = memoryStorage.has(key) ? memoryStorage.get(key) : null;
      }
      if (raw == null) return null;
      try {
        return JSON.parse(raw);
      } catch (error) {
        return null;
      }
    },
    set(key, value) {
      const raw = JSON.stringify(value);
      try {
        window.localStorage.setItem(key, raw);
      } catch (error) {
        memoryStorage.set(key, raw);
      }
    },
    remove(key) {
      try {
        window.localStorage.removeItem(key);
      } catch (error) {
        /* storage unavailable */
      }
      memoryStorage.delete(key);
    },
  };

  function conversationKey(kind, conversationId) {
    return `cs-widget:${kind}:${conversationId}`;
  }

  function loadStoredConversation() {
    const value = storage.get(STORAGE_KEY);
    if (!value || typeof value !== "object") return null;
    if (value.id == null || typeof value.token !== "string" || typeof value.ws_path !== "string") return null;
    return { id: value.id, token: value.token, ws_path: value.ws_path };
  }

  function forgetConversation(conversation) {
    storage.remove(STORAGE_KEY);
    if (conversation) {
      storage.remove(conversationKey("feedback", conversation.id));
      storage.remove(conversationKey("handoff", conversation.id));
      storage.remove(conversationKey("csat", conversation.id));
    }
  }

  function parseDate(value) {
    if (!value) return new Date();
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? new Date() : date;
  }

  const timeFormat = new Intl.DateTimeFormat(config.locale, { hour: "numeric", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(config.locale, { year: "numeric", month: "long", day: "numeric", weekday: "short" });

  function dayKey(date) {
    return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
  }

  function dayLabel(date) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (dayKey(date) === dayKey(today)) return t("today");
    if (dayKey(date) === dayKey(yesterday)) return t("yesterday");
    return dayFormat.format(date);
  }

  function safeHttpUrl(value) {
    if (typeof value !== "string" || !value) return null;
    try {
      const url = new URL(value, window.location.href);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  // ------------------------------------------------------------------ markdown

  const PURIFY_CONFIG = {
    ALLOWED_TAGS: [
      "a", "p", "br", "strong", "em", "b", "i", "s", "del", "code", "pre", "blockquote",
      "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
      "table", "thead", "tbody", "tr", "th", "td", "span", "sup", "sub",
    ],
    ALLOWED_ATTR: ["href", "title", "start", "class"],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
    FORBID_TAGS: ["img", "picture", "source", "svg", "math", "style", "iframe", "object", "embed", "form", "input", "video", "audio"],
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  };
  let markdownRenderer = null;
  let purifyReady = false;

  function setUpMarkdown() {
    if (typeof window.markdownit === "function" && !markdownRenderer) {
      markdownRenderer = window.markdownit({ html: false, linkify: true, breaks: true, typographer: false });
      // Remote images from the model are never loaded: show the alt text instead.
      markdownRenderer.renderer.rules.image = (tokens, index, options, env, renderer) => {
        const alt = renderer.renderInlineAsText(tokens[index].children || [], options, env);
        return alt ? `<span class="cs-md-image">${markdownRenderer.utils.escapeHtml(alt)}</span>` : "";
      };
    }
    if (window.DOMPurify && window.DOMPurify.isSupported && !purifyReady) {
      window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
        if (node.nodeName === "A") {
          const href = (node.getAttribute("href") || "").trim();
          if (!/^(?:https?:|mailto:)/i.test(href)) {
            node.removeAttribute("href");
          } else {
            node.setAttribute("target", "_blank");
            node.setAttribute("rel", "noopener noreferrer nofollow");
          }
        }
        if (node.hasAttribute && node.hasAttribute("class")) {
          const kept = node.getAttribute("class").split(/\s+/).filter((name) => name === "cs-md-image");
          if (kept.length) node.setAttribute("class", kept.join(" "));
          else node.removeAttribute("class");
        }
      });
      purifyReady = true;
    }
  }

  function renderMarkdownInto(element, text) {
    setUpMarkdown();
    if (!markdownRenderer || !purifyReady) {
      // Without both libraries the reply is still readable, as plain text.
      element.textContent = text;
      element.classList.add("cs-plain");
      return;
    }
    const html = markdownRenderer.render(text || "");
    const fragment = window.DOMPurify.sanitize(html, PURIFY_CONFIG);
    element.replaceChildren(fragment);
  }

  // ------------------------------------------------------------------ state

  const state = {
    conversation: loadStoredConversation(),
    creating: null,
    metadata: {},
    entries: [],
    byId: new Map(),
    byClientId: new Map(),
    replies: new Map(),
    awaiting: null,
    outbox: new Map(),
    pendingFrames: [],
    drafts: [],
    faq: [],
    handoff: null,
    feedback: {},
    csatDone: false,
    completedRepliesThisVisit: 0,
    csatPromptShown: false,
    previousConversation: null,
    invalidTokenResets: [],
    unread: 0,
  };

  const connection = {
    socket: null,
    ready: false,
    everReady: false,
    attempt: 0,
    reconnectTimer: null,
    handshakeTimer: null,
    bannerTimer: null,
  };

  // ------------------------------------------------------------------ DOM

  const ui = {};

  function applyBrandColor() {
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

  function buildInterface() {
    const root = document.getElementById("cs-widget-root") || document.body.appendChild(h("main", { id: "cs-widget-root" }));
    document.documentElement.lang = config.locale;
    document.title = title;
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
          h("h1", { class: "cs-header__title", text: title }),
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
    ui.transcript.append(ui.transcriptInner);
    ui.stopButton = h("button", {
      type: "button", class: "cs-stop", testid: "stop-button", hidden: true, onclick: () => cancelReply(),
    }, icon("stop"), h("span", { text: t("stop") }));
    ui.dropOverlay = h("div", { class: "cs-drop", hidden: true, "aria-hidden": "true" },
      h("div", { class: "cs-drop__box" }, icon("image"), h("span", { text: t("dropHere") })));
    ui.live = h("div", { class: "cs-visually-hidden", "aria-live": "polite", "aria-atomic": "true", testid: "live-region" });
    ui.conversation = h("section", { class: "cs-conversation" },
      ui.banner, ui.transcript, ui.stopButton, ui.dropOverlay, ui.live);

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
  }

  // ------------------------------------------------------------------ header and banner

  function updateHeader() {
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
    ui.statusDot.classList.toggle("is-offline", Boolean(state.conversation) && !connection.ready);
    ui.csatButton.disabled = !state.conversation;
  }

  function showBanner(kind) {
    clearTimeout(connection.bannerTimer);
    const text = !navigator.onLine ? t("offline") : kind === "connecting" ? t("connecting") : t("reconnecting");
    ui.banner.querySelector(".cs-banner__text").textContent = text;
    ui.banner.dataset.state = kind;
    ui.banner.hidden = false;
    updateQueuedNotes();
  }

  function hideBanner() {
    clearTimeout(connection.bannerTimer);
    ui.banner.hidden = true;
  }

  let noticeTimer = null;
  function showNotice(text) {
    ui.notice.querySelector(".cs-notice__text").textContent = text;
    ui.notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(hideNotice, NOTICE_HIDE_MS);
  }

  function hideNotice() {
    clearTimeout(noticeTimer);
    ui.notice.hidden = true;
  }

  function announce(text) {
    ui.live.textContent = "";
    // A fresh text node after a tick makes screen readers announce the same words again.
    window.setTimeout(() => {
      ui.live.textContent = text;
    }, 50);
  }

  // ------------------------------------------------------------------ transcript rendering

  function isNearBottom() {
    const element = ui.transcript;
    return element.scrollHeight - element.scrollTop - element.clientHeight < 120;
  }

  function scrollToBottom(force) {
    if (!force && !stickToBottom) return;
    window.requestAnimationFrame(() => {
      ui.transcript.scrollTop = ui.transcript.scrollHeight;
    });
  }

  let stickToBottom = true;

  function makeEntry(fields) {
    return Object.assign({
      key: nextKey(),
      id: null,
      clientId: null,
      role: "assistant",
      text: "",
      status: "complete",
      attachments: [],
      citations: [],
      createdAt: new Date(),
      replyId: null,
      lastSeq: -1,
      thinking: false,
      error: null,
      local: false,
      answersTo: null,
      retried: false,
      timer: null,
      element: null,
    }, fields);
  }

  function entryFromMessage(message) {
    return makeEntry({
      id: message.id,
      role: ["customer", "assistant", "agent", "system"].includes(message.role) ? message.role : "system",
      text: typeof message.text === "string" ? message.text : "",
      status: message.status || "complete",
      attachments: Array.isArray(message.attachments) ? message.attachments : [],
      citations: Array.isArray(message.citations) ? message.citations : [],
      createdAt: parseDate(message.created_at),
      agentName: message.agent_name || (message.agent && message.agent.name) || null,
    });
  }

  function applyMessage(entry, message) {
    if (message.id != null) entry.id = message.id;
    if (typeof message.text === "string") entry.text = message.text;
    if (message.status) entry.status = message.status;
    if (Array.isArray(message.attachments)) entry.attachments = message.attachments;
    if (Array.isArray(message.citations)) entry.citations = message.citations;
    if (message.created_at) entry.createdAt = parseDate(message.created_at);
    if (message.agent_name) entry.agentName = message.agent_name;
    indexEntry(entry);
  }

  function indexEntry(entry) {
    if (entry.id != null) state.byId.set(String(entry.id), entry);
    if (entry.clientId) state.byClientId.set(entry.clientId, entry);
    if (entry.replyId != null) state.replies.set(String(entry.replyId), entry);
  }

  function findById(id) {
    return id == null ? null : state.byId.get(String(id)) || null;
  }

  function findReply(replyId) {
    return replyId == null ? null : state.replies.get(String(replyId)) || findById(replyId);
  }

  function statusForDisplay(entry) {
    if (entry.role === "customer" && entry.id == null) return entry.sendFailed ? "failed" : "sending";
    return entry.status;
  }

  function renderEntry(entry) {
    if (!entry.element) {
      entry.element = h("div", { testid: "message" });
    }
    const element = entry.element;
    element.className = `cs-message cs-message--${entry.role}`;
    element.dataset.role = entry.role;
    element.dataset.status = statusForDisplay(entry);
    element.dataset.messageId = entry.id == null ? "" : String(entry.id);
    element.dataset.key = entry.key;

    if (entry.role === "system") {
      element.replaceChildren(h("p", { class: "cs-system", testid: "message-text", text: entry.text }));
      return element;
    }

    const body = h("div", { class: "cs-message__body" });
    if (entry.role === "assistant" || entry.role === "agent") {
      body.append(entry.role === "agent"
        ? h("div", { class: "cs-message__label" },
          entry.agentName ? h("span", { class: "cs-message__name", text: entry.agentName }) : null,
          h("span", { class: "cs-badge", testid: "agent-label", text: t("agentLabel") }))
        : h("div", { class: "cs-message__label" }, h("span", { class: "cs-message__name", text: title })));
    }

    if (entry.role === "customer") {
      if (entry.attachments.length) body.append(renderAttachments(entry));
      if (entry.text) {
        body.append(h("div", { class: "cs-bubble" },
          h("p", { class: "cs-message__text cs-plain", testid: "message-text", text: entry.text })));
      }
    } else {
      const bubble = h("div", { class: "cs-bubble" });
      if (entry.thinking && !entry.text) {
        bubble.append(h("div", { class: "cs-thinking", testid: "thinking", role: "img", "aria-label": t("thinking") },
          h("span"), h("span"), h("span")));
      }
      entry.textElement = h("div", { class: "cs-message__text cs-markdown", testid: "message-text" });
      if (entry.role === "agent") {
        entry.textElement.classList.add("cs-plain");
        entry.textElement.textContent = entry.text;
      } else if (entry.text) {
        renderMarkdownInto(entry.textElement, entry.text);
      }
      if (entry.text || !entry.thinking) bubble.append(entry.textElement);
      if (entry.status === "streaming" && entry.text) bubble.classList.add("is-streaming");
      if (entry.attachments.length) bubble.append(renderAttachments(entry));
      body.append(bubble);
      if (entry.citations.length) body.append(renderCitations(entry.citations));
      if (entry.status === "failed") body.append(renderReplyError(entry));
    }

    const meta = renderMeta(entry);
    if (meta) body.append(meta);
    if (entry.role === "assistant" && entry.feedbackOpen) body.append(renderFeedbackComment(entry));

    const avatar = entry.role === "assistant"
      ? h("div", { class: "cs-avatar cs-avatar--assistant", "aria-hidden": "true" }, icon("sparkle"))
      : entry.role === "agent"
        ? h("div", { class: "cs-avatar cs-avatar--agent", "aria-hidden": "true", text: initials(entry.agentName) || "" },
          entry.agentName ? null : icon("person"))
        : null;
    element.replaceChildren(...[avatar, body].filter(Boolean));
    return element;
  }

  function initials(name) {
    if (!name) return "";
    const trimmed = String(name).trim();
    if (/[\u3400-\u9fff]/.test(trimmed)) return trimmed.slice(-2);
    return trimmed.split(/\s+/).slice(0, 2).map((part) => part[0]).join("").toUpperCase();
  }

  function renderAttachments(entry) {
    const list = h("div", { class: "cs-attachments" + (entry.attachments.length === 1 ? " is-single" : "") });
    entry.attachments.forEach((attachment, index) => {
      const source = attachment.previewUrl || attachment.thumbnail_url || attachment.url;
      const full = attachment.url || attachment.previewUrl;
      if (!source) return;
      const image = h("img", {
        src: source, alt: t("imageAlt", { index: index + 1 }), loading: "lazy", decoding: "async",
      });
      if (attachment.width && attachment.height) {
        image.width = attachment.width;
        image.height = attachment.height;
      }
      list.append(h("button", {
        type: "button", class: "cs-attachment", "aria-label": `${t("openImage")} ${index + 1}`,
        onclick: () => openLightbox(full, t("imageAlt", { index: index + 1 })),
      }, image));
    });
    return list;
  }

  function renderCitations(citations) {
    const list = h("ol", { class: "cs-citations__list" });
    citations.forEach((citation) => {
      const name = citation && (citation.title || citation.url) ? String(citation.title || citation.url) : "";
      if (!name) return;
      const url = safeHttpUrl(citation.url);
      list.append(h("li", null, url
        ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow" }, icon("link"), h("span", { text: name }))
        : h("span", { class: "cs-citation__plain", text: name })));
    });
    return h("div", { class: "cs-citations", testid: "citations" },
      h("p", { class: "cs-citations__title", text: t("sources") }), list);
  }

  function replyErrorText(entry) {
    const code = entry.error && entry.error.code;
    const known = code && strings.replyErrors[code];
    if (known) return known;
    if (entry.error && entry.error.detail) return String(entry.error.detail);
    return strings.replyErrors.unknown;
  }

  function renderReplyError(entry) {
    const actions = h("div", { class: "cs-reply-error__actions" });
    if (!entry.retried && findAnsweredCustomerEntry(entry)) {
      actions.append(h("button", {
        type: "button", class: "cs-chip-button", testid: "retry-button", onclick: () => retryReply(entry),
      }, icon("refresh"), h("span", { text: t("retry") })));
    }
    if (!state.handoff) {
      actions.append(h("button", {
        type: "button", class: "cs-chip-button", testid: "error-handoff-button",
        onclick: () => requestHandoff(`reply_error:${(entry.error && entry.error.code) || "unknown"}`),
      }, icon("headset"), h("span", { text: t("talkToPerson") })));
    }
    return h("div", { class: "cs-reply-error", testid: "reply-error", "data-code": (entry.error && entry.error.code) || "" },
      h("p", { class: "cs-reply-error__text" }, icon("alert"),
        h("span", { text: joinSentences(replyErrorText(entry), t("errorOffer")) })),
      actions);
  }

  function renderMeta(entry) {
    const meta = h("div", { class: "cs-message__meta" });
    if (entry.role === "customer" && entry.id == null) {
      if (entry.sendFailed) {
        meta.append(h("span", { class: "cs-meta-error", text: entry.sendError || t("notSent") }),
          h("button", {
            type: "button", class: "cs-link-button", testid: "retry-button", onclick: () => resendCustomerEntry(entry),
          }, t("retry")));
      } else {
        meta.append(h("span", {
          class: "cs-meta-pending",
          text: entry.waitingUploads ? t("waitingUploads") : connection.ready || !state.conversation ? t("sending") : t("queued"),
        }));
      }
      return meta;
    }
    meta.append(h("time", { datetime: entry.createdAt.toISOString(), text: timeFormat.format(entry.createdAt) }));
    if (entry.role === "assistant") {
      if (entry.status === "cancelled") meta.append(h("span", { class: "cs-meta-note", text: t("stopped") }));
      if ((entry.status === "complete" || entry.status === "cancelled") && entry.id != null && entry.text) {
        meta.append(renderFeedbackButtons(entry));
      }
    }
    return meta;
  }

  function renderFeedbackButtons(entry) {
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

  function renderFeedbackComment(entry) {
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

  function renderWelcome() {
    return h("div", { class: "cs-welcome" },
      h("div", { class: "cs-welcome__avatar", "aria-hidden": "true" }, icon("sparkle")),
      h("p", { class: "cs-welcome__title", text: title }),
      h("p", { class: "cs-welcome__text", text: t("welcomeText") }));
  }

  function renderGreeting() {
    return h("div", { class: "cs-message cs-message--assistant cs-message--greeting", testid: "greeting" },
      h("div", { class: "cs-avatar cs-avatar--assistant", "aria-hidden": "true" }, icon("sparkle")),
      h("div", { class: "cs-message__body" },
        h("div", { class: "cs-message__label" }, h("span", { text: title })),
        h("div", { class: "cs-bubble" }, h("p", { class: "cs-message__text cs-plain", text: greeting }))));
  }

  function renderDaySeparator(date) {
    return h("div", { class: "cs-day", role: "separator" }, h("span", { text: dayLabel(date) }));
  }

  // Rebuild the whole transcript (on ready, on a new conversation).
  function renderAll() {
    const children = [renderWelcome(), renderGreeting()];
    let lastDay = null;
    for (const entry of state.entries) {
      const day = dayKey(entry.createdAt);
      if (day !== lastDay) {
        // The first separator is left out when everything happened today: it adds nothing.
        if (lastDay !== null || day !== dayKey(new Date())) children.push(renderDaySeparator(entry.createdAt));
        lastDay = day;
      }
      children.push(renderEntry(entry));
    }
    if (state.csatPromptElement) children.push(state.csatPromptElement);
    ui.transcriptInner.replaceChildren(...children);
    updateStopButton();
  }

  function appendEntry(entry) {
    const previous = state.entries[state.entries.length - 1];
    state.entries.push(entry);
    indexEntry(entry);
    const element = renderEntry(entry);
    const day = dayKey(entry.createdAt);
    const anchor = state.csatPromptElement && state.csatPromptElement.isConnected ? state.csatPromptElement : null;
    if (previous && dayKey(previous.createdAt) !== day) ui.transcriptInner.insertBefore(renderDaySeparator(entry.createdAt), anchor);
    ui.transcriptInner.insertBefore(element, anchor);
    scrollToBottom(entry.role === "customer");
    return entry;
  }

  function removeEntry(entry) {
    clearTimeout(entry.timer);
    const index = state.entries.indexOf(entry);
    if (index >= 0) state.entries.splice(index, 1);
    if (entry.element) entry.element.remove();
    if (entry.clientId && state.byClientId.get(entry.clientId) === entry) state.byClientId.delete(entry.clientId);
    if (state.awaiting === entry) state.awaiting = null;
  }

  function addLocalNotice(text) {
    return appendEntry(makeEntry({ role: "system", text, local: true }));
  }

  // Streaming text is drawn at most once per frame, however fast deltas arrive.
  const dirtyEntries = new Set();
  let frameScheduled = false;
  function scheduleTextRender(entry) {
    dirtyEntries.add(entry);
    if (frameScheduled) return;
    frameScheduled = true;
    window.requestAnimationFrame(() => {
      frameScheduled = false;
      const shouldStick = stickToBottom;
      for (const dirty of dirtyEntries) {
        if (!dirty.element || !dirty.textElement || !dirty.textElement.isConnected || dirty.thinkingShown) {
          renderEntry(dirty);
        } else {
          renderMarkdownInto(dirty.textElement, dirty.text);
        }
        dirty.thinkingShown = false;
      }
      dirtyEntries.clear();
      if (shouldStick) ui.transcript.scrollTop = ui.transcript.scrollHeight;
    });
  }

  function updateQueuedNotes() {
    for (const entry of state.entries) {
      if (entry.role === "customer" && entry.id == null && !entry.sendFailed) renderEntry(entry);
    }
  }

  function updateStopButton() {
    const streaming = currentStreamingReply();
    ui.stopButton.hidden = !(streaming && connection.ready);
  }

  function currentStreamingReply() {
    for (let index = state.entries.length - 1; index >= 0; index -= 1) {
      const entry = state.entries[index];
      if (entry.role === "assistant" && entry.status === "streaming" && entry.replyId != null) return entry;
    }
    return null;
  }

  function findAnsweredCustomerEntry(reply) {
    if (reply.answersTo && state.entries.includes(reply.answersTo)) return reply.answersTo;
    const index = state.entries.indexOf(reply);
    for (let position = index - 1; position >= 0; position -= 1) {
      const entry = state.entries[position];
      if (entry.role === "customer") return entry;
    }
    return null;
  }

  function lastCustomerEntry() {
    for (let index = state.entries.length - 1; index >= 0; index -= 1) {
      if (state.entries[index].role === "customer") return state.entries[index];
    }
    return null;
  }

  // ------------------------------------------------------------------ reply timers

  function armReplyTimer(entry) {
    clearTimeout(entry.timer);
    entry.timer = null;
    if (!connection.ready) return;
    entry.timer = window.setTimeout(() => replyTimedOut(entry), config.replyTimeoutMs);
  }

  function clearReplyTimer(entry) {
    clearTimeout(entry.timer);
    entry.timer = null;
  }

  function replyTimedOut(entry) {
    entry.timer = null;
    if (!state.entries.includes(entry)) return;
    if (entry.status !== "streaming") return;
    entry.status = "failed";
    entry.thinking = false;
    entry.error = { code: "timeout" };
    if (state.awaiting === entry) state.awaiting = null;
    renderEntry(entry);
    updateStopButton();
    scrollToBottom(false);
  }

  function pauseReplyTimers() {
    for (const entry of state.entries) clearReplyTimer(entry);
  }

  function createAwaitingReply(customerEntry) {
    const entry = makeEntry({
      role: "assistant", status: "streaming", thinking: true, local: true, answersTo: customerEntry,
    });
    state.awaiting = entry;
    appendEntry(entry);
    armReplyTimer(entry);
    scrollToBottom(false);
    return entry;
  }

  // ------------------------------------------------------------------ REST

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail || code || `HTTP ${status}`);
      this.status = status;
      this.code = code;
      this.detail = detail;
    }
  }

  async function readError(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    return new ApiError(response.status, body && body.code, body && body.detail);
  }

  function ensureConversation() {
    if (state.conversation) return Promise.resolve(state.conversation);
    if (state.creating) return state.creating;
    state.creating = (async () => {
      try {
        const response = await fetch(`${config.apiBase}/conversations`, {
          method: "POST",
          credentials: "omit",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ locale: config.locale, metadata: state.metadata || {} }),
        });
        if (response.status !== 201 && response.status !== 200) throw await readError(response);
        const body = await response.json();
        if (body.id == null || !body.token || !body.ws_path) throw new ApiError(response.status, "bad_response", "");
        const conversation = { id: body.id, token: body.token, ws_path: body.ws_path };
        state.conversation = conversation;
        storage.set(STORAGE_KEY, conversation);
        loadConversationState();
        updateHeader();
        connect();
        return conversation;
      } finally {
        state.creating = null;
      }
    })();
    return state.creating;
  }

  function loadConversationState() {
    const conversation = state.conversation;
    state.feedback = (conversation && storage.get(conversationKey("feedback", conversation.id))) || {};
    state.handoff = (conversation && storage.get(conversationKey("handoff", conversation.id))) || null;
    state.csatDone = Boolean(conversation && storage.get(conversationKey("csat", conversation.id)));
  }

  async function loadQuickEntries() {
    try {
      const response = await fetch(`${config.apiBase}/faq?locale=${encodeURIComponent(config.locale)}`, {
        credentials: "omit", headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const body = await response.json();
      const entries = Array.isArray(body) ? body : body && Array.isArray(body.entries) ? body.entries : [];
      state.faq = entries.filter((entry) => entry && typeof entry.question === "string" && entry.question.trim());
      renderQuickEntries();
    } catch (error) {
      /* quick entries are optional */
    }
  }

  function renderQuickEntries() {
    ui.faqList.replaceChildren(...state.faq.map((entry) => h("li", null,
      h("button", {
        type: "button", class: "cs-quick-entry", testid: "quick-entry", "data-entry-id": entry.id == null ? "" : String(entry.id),
        onclick: () => sendQuestion(entry.question),
      }, h("span", { class: "cs-quick-entry__text", text: entry.question }), icon("chevron", "cs-quick-entry__chevron")))));
    ui.faq.hidden = state.faq.length === 0;
    ui.app.classList.toggle("has-faq", state.faq.length > 0);
  }

  function sendQuestion(question) {
    sendMessage(question.trim(), []);
    if (window.matchMedia("(pointer: fine)").matches) ui.input.focus();
  }

  // ------------------------------------------------------------------ websocket

  function websocketUrl(path) {
    if (/^wss?:\/\//i.test(path)) return path;
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${window.location.host}${path.startsWith("/") ? "" : "/"}${path}`;
  }

  function connect() {
    if (!state.conversation) return;
    clearTimeout(connection.reconnectTimer);
    clearTimeout(connection.handshakeTimer);
    const previous = connection.socket;
    if (previous) {
      connection.socket = null;
      try {
        previous.close(1000);
      } catch (error) {
        /* already closed */
      }
    }
    connection.ready = false;
    if (!connection.everReady && connection.attempt === 0) {
      // Only say "Connecting…" when it takes long enough to notice.
      clearTimeout(connection.bannerTimer);
      connection.bannerTimer = window.setTimeout(() => {
        if (!connection.ready) showBanner("connecting");
      }, 1500);
    }
    let socket;
    try {
      socket = new WebSocket(websocketUrl(state.conversation.ws_path));
    } catch (error) {
      scheduleReconnect();
      return;
    }
    connection.socket = socket;
    const conversation = state.conversation;
    // A socket that neither opens nor says ready within 15 s is given up and retried.
    connection.handshakeTimer = window.setTimeout(() => {
      if (connection.socket === socket && !connection.ready) socket.close(4000);
    }, 15000);
    socket.addEventListener("open", () => {
      if (connection.socket !== socket) return;
      socket.send(JSON.stringify({ type: "hello", token: conversation.token }));
    });
    socket.addEventListener("message", (event) => {
      if (connection.socket !== socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (!frame || typeof frame.type !== "string") return;
      try {
        handleFrame(frame);
      } catch (error) {
        // One bad frame must not take the widget down.
        if (window.console) console.error("cs-widget: frame handling failed", frame.type, error);
      }
    });
    socket.addEventListener("close", (event) => {
      if (connection.socket !== socket) return;
      connection.socket = null;
      const wasReady = connection.ready;
      connection.ready = false;
      clearTimeout(connection.handshakeTimer);
      onSocketClosed(event.code, wasReady);
    });
  }

  function onSocketClosed(code, wasReady) {
    pauseReplyTimers();
    updateStopButton();
    updateHeader();
    if (code === 4401) {
      handleInvalidToken();
      return;
    }
    if (wasReady || connection.attempt > 0 || connection.everReady) showBanner("reconnecting");
    else showBanner("connecting");
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(connection.reconnectTimer);
    if (!state.conversation) return;
    const base = Math.min(10000, 500 * 2 ** Math.min(connection.attempt, 10));
    const delay = base * (0.75 + Math.random() * 0.5);
    connection.attempt += 1;
    connection.reconnectTimer = window.setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (!state.conversation || connection.ready) return;
    if (connection.socket && connection.socket.readyState === WebSocket.CONNECTING) return;
    connect();
  }

  function disconnect() {
    clearTimeout(connection.reconnectTimer);
    clearTimeout(connection.handshakeTimer);
    clearTimeout(connection.bannerTimer);
    const socket = connection.socket;
    connection.socket = null;
    connection.ready = false;
    connection.everReady = false;
    connection.attempt = 0;
    if (socket) {
      try {
        socket.close(1000);
      } catch (error) {
        /* already closed */
      }
    }
    hideBanner();
  }

  function sendFrame(frame) {
    const socket = connection.socket;
    if (!connection.ready || !socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  // Frames other than messages: sent now, or once the socket is ready again.
  function sendOrQueue(frame) {
    if (sendFrame(frame)) return;
    state.pendingFrames.push(frame);
    ensureConversation().catch(() => showNotice(t("createFailed")));
  }

  function flushOutbox() {
    for (const item of state.outbox.values()) {
      if (!sendFrame(item.frame)) return;
      item.sentAt = Date.now();
    }
    while (state.pendingFrames.length && connection.ready) {
      const frame = state.pendingFrames.shift();
      if (!sendFrame(frame)) {
        state.pendingFrames.unshift(frame);
        return;
      }
    }
  }

  function handleInvalidToken() {
    const now = Date.now();
    state.invalidTokenResets = state.invalidTokenResets.filter((time) => now - time < 60000);
    state.invalidTokenResets.push(now);
    const old = state.conversation;
    // Messages not yet accepted move to the new conversation; their images belonged to the
    // old one and cannot follow.
    const unsent = Array.from(state.outbox.values())
      .map((item) => item.entry)
      .filter((entry) => entry && entry.text);
    disconnect();
    forgetConversation(old);
    resetConversationState();
    renderAll();
    addLocalNotice(t("conversationExpired"));
    updateHeader();
    if (state.invalidTokenResets.length > 2) {
      showNotice(t("createFailed"));
      return;
    }
    for (const entry of unsent) sendMessage(entry.text, []);
  }

  function resetConversationState() {
    for (const entry of state.entries) clearReplyTimer(entry);
    state.conversation = null;
    state.entries = [];
    state.byId = new Map();
    state.byClientId = new Map();
    state.replies = new Map();
    state.awaiting = null;
    state.outbox = new Map();
    state.pendingFrames = [];
    state.handoff = null;
    state.feedback = {};
    state.csatDone = false;
    state.completedRepliesThisVisit = 0;
    state.csatPromptShown = false;
    state.csatPromptElement = null;
    for (const draft of state.drafts) {
      if (draft.xhr) draft.xhr.abort();
      if (draft.previewUrl) URL.revokeObjectURL(draft.previewUrl);
    }
    state.drafts = [];
    renderDrafts();
  }

  // ------------------------------------------------------------------ frames

  function handleFrame(frame) {
    switch (frame.type) {
      case "ready": return onReady(frame);
      case "message.accepted": return onMessageAccepted(frame);
      case "reply.started": return onReplyStarted(frame);
      case "reply.delta": return onReplyDelta(frame);
      case "reply.done": return onReplyDone(frame);
      case "reply.error": return onReplyError(frame);
      case "feedback.saved": return onFeedbackSaved(frame);
      case "csat.saved": return onCsatSaved(frame);
      case "handoff.started": return onHandoffStarted(frame);
      case "agent.joined": return onAgentJoined(frame);
      case "agent.message": return onAgentMessage(frame);
      case "error": return onErrorFrame(frame);
      default:
        // Frames added to the contract later that carry a message are shown as such.
        if (frame.message && typeof frame.message === "object" && frame.message.role) upsertMessage(frame.message);
        return undefined;
    }
  }

  function onReady(frame) {
    connection.ready = true;
    connection.everReady = true;
    connection.attempt = 0;
    clearTimeout(connection.handshakeTimer);
    hideBanner();

    const history = Array.isArray(frame.messages) ? frame.messages : [];
    const pending = frame.pending_reply && frame.pending_reply.reply_id != null ? frame.pending_reply : null;
    const previousEntries = state.entries;
    for (const entry of previousEntries) clearReplyTimer(entry);
    const oldReplies = state.replies;

    state.entries = [];
    state.byId = new Map();
    state.byClientId = new Map();
    state.replies = new Map();
    state.awaiting = null;

    for (const message of history) {
      if (!message || typeof message !== "object") continue;
      const entry = entryFromMessage(message);
      state.entries.push(entry);
      indexEntry(entry);
    }

    if (pending) {
      let entry = findById(pending.reply_id);
      if (!entry) {
        const known = oldReplies.get(String(pending.reply_id));
        entry = makeEntry({ role: "assistant", status: "streaming", createdAt: known ? known.createdAt : new Date() });
        state.entries.push(entry);
      }
      entry.replyId = pending.reply_id;
      entry.status = "streaming";
      // The server's snapshot is authoritative: deltas after it continue from its seq.
      entry.text = typeof pending.text === "string" ? pending.text : "";
      entry.lastSeq = Number.isInteger(pending.seq) ? pending.seq : -1;
      entry.thinking = !entry.text;
      entry.answersTo = findAnsweredCustomerEntry(entry);
      indexEntry(entry);
    }

    // A saved reply still marked streaming that the server no longer works on was cut short.
    const now = Date.now();
    for (const entry of state.entries) {
      if (entry.role !== "assistant" || entry.status !== "streaming" || (pending && entry.replyId === pending.reply_id)) continue;
      const isLast = entry === state.entries[state.entries.length - 1];
      if (isLast && now - entry.createdAt.getTime() < RECENT_MESSAGE_MS) {
        entry.replyId = entry.id;
        entry.thinking = !entry.text;
        indexEntry(entry);
      } else {
        entry.status = "failed";
        entry.error = { code: "interrupted" };
      }
    }

    // Keep what the customer sent that the server has not accepted yet, and this visit's notices.
    for (const entry of previousEntries) {
      const unaccepted = entry.role === "customer" && entry.id == null;
      const localNotice = entry.role === "system" && entry.local;
      if (unaccepted || localNotice) {
        entry.element = null;
        state.entries.push(entry);
        indexEntry(entry);
      }
    }

    // The last customer message may still be waiting for its answer (queued on the server).
    const last = state.entries[state.entries.length - 1];
    const inProgress = currentStreamingReply();
    renderAll();
    if (!inProgress && !state.handoff && last && last.role === "customer" && last.id != null
      && now - last.createdAt.getTime() < RECENT_MESSAGE_MS) {
      createAwaitingReply(last);
    }
    for (const entry of state.entries) {
      if (entry.role === "assistant" && entry.status === "streaming") armReplyTimer(entry);
    }
    updateStopButton();
    updateHeader();
    scrollToBottom(true);
    flushOutbox();
    updateQueuedNotes();
  }

  function onMessageAccepted(frame) {
    const message = frame.message && typeof frame.message === "object" ? frame.message : {};
    const clientId = frame.client_id || message.client_id;
    const outboxItem = clientId ? state.outbox.get(clientId) : null;
    if (clientId) state.outbox.delete(clientId);
    let entry = clientId ? state.byClientId.get(clientId) : null;
    const alreadyAccepted = entry && entry.id != null;
    const existing = findById(message.id);
    if (existing && entry && existing !== entry) {
      // The history after a reconnect already holds this message: keep that copy.
      removeEntry(entry);
      entry = existing;
    }
    if (!entry) {
      if (existing) return;
      entry = appendEntry(entryFromMessage(Object.assign({ role: "customer" }, message)));
    } else {
      const localPreviews = entry.attachments;
      applyMessage(entry, message);
      entry.sendFailed = false;
      entry.waitingUploads = false;
      if (!message.status) entry.status = "complete";
      if (!entry.attachments.length && localPreviews.length) entry.attachments = localPreviews;
      renderEntry(entry);
    }
    if (alreadyAccepted) return;
    bridge.emit("message.sent", {
      id: entry.id, client_id: clientId || null, text: entry.text,
      attachments: (outboxItem && outboxItem.frame.attachments) || [],
    });
    if (state.handoff) return;
    if (state.awaiting || currentStreamingReply()) return;
    const index = state.entries.indexOf(entry);
    const answered = state.entries.slice(index + 1).some((later) => later.role === "assistant" || later.role === "agent");
    if (!answered) createAwaitingReply(entry);
  }

  function replyEntryFor(replyId) {
    let entry = findReply(replyId);
    if (!entry && state.awaiting) {
      entry = state.awaiting;
    }
    if (!entry) {
      entry = appendEntry(makeEntry({ role: "assistant", status: "streaming", thinking: true }));
      entry.answersTo = lastCustomerEntry();
    }
    if (state.awaiting === entry) state.awaiting = null;
    if (replyId != null && entry.replyId == null) {
      entry.replyId = replyId;
      indexEntry(entry);
    }
    return entry;
  }

  function onReplyStarted(frame) {
    const entry = replyEntryFor(frame.reply_id);
    if (frame.message && typeof frame.message === "object") applyMessage(entry, frame.message);
    const answered = findById(frame.message_id || frame.in_reply_to);
    if (answered) entry.answersTo = answered;
    if (!entry.answersTo) entry.answersTo = lastCustomerEntry();
    if (entry.status !== "streaming") {
      entry.status = "streaming";
      entry.error = null;
    }
    entry.thinking = !entry.text;
    renderEntry(entry);
    armReplyTimer(entry);
    updateStopButton();
    scrollToBottom(false);
  }

  function onReplyDelta(frame) {
    const entry = replyEntryFor(frame.reply_id);
    const seq = Number.isInteger(frame.seq) ? frame.seq : null;
    if (seq !== null && seq <= entry.lastSeq) return;
    if (seq !== null) entry.lastSeq = seq;
    const wasThinking = entry.thinking && !entry.text;
    entry.text += typeof frame.text === "string" ? frame.text : "";
    entry.thinking = false;
    if (entry.status !== "streaming") {
      // A late delta after a local timeout revives the reply.
      entry.status = "streaming";
      entry.error = null;
      renderEntry(entry);
    } else if (wasThinking) {
      entry.thinkingShown = true;
    }
    armReplyTimer(entry);
    scheduleTextRender(entry);
    updateStopButton();
  }

  function onReplyDone(frame) {
    const message = frame.message && typeof frame.message === "object" ? frame.message : {};
    const replyId = frame.reply_id != null ? frame.reply_id : message.id;
    let entry = findReply(replyId) || findById(message.id);
    if (!entry) entry = replyEntryFor(replyId);
    if (state.awaiting === entry) state.awaiting = null;
    const duplicate = findById(message.id);
    if (duplicate && duplicate !== entry) removeEntry(duplicate);
    const wasFinished = entry.status === "complete" && entry.id != null && entry.id === message.id;
    applyMessage(entry, message);
    if (!message.status) entry.status = "complete";
    if (entry.status === "streaming") entry.status = "complete";
    entry.thinking = false;
    entry.error = null;
    clearReplyTimer(entry);
    dirtyEntries.delete(entry);
    renderEntry(entry);
    updateStopButton();
    scrollToBottom(false);
    if (wasFinished) return;
    const spoken = entry.textElement ? entry.textElement.textContent.trim() : entry.text;
    if (spoken) announce(t("announceReply", { name: title, text: spoken }));
    bridge.emit("reply.done", { id: entry.id, text: entry.text, status: entry.status, citations: entry.citations });
    bridge.noteIncoming();
    if (entry.status === "complete") {
      state.completedRepliesThisVisit += 1;
      maybeOfferCsat();
    }
  }

  function onReplyError(frame) {
    const entry = replyEntryFor(frame.reply_id);
    entry.status = "failed";
    entry.thinking = false;
    entry.error = { code: frame.code || "unknown", detail: frame.detail || "" };
    if (frame.message && typeof frame.message === "object") {
      applyMessage(entry, frame.message);
      entry.status = "failed";
    }
    clearReplyTimer(entry);
    dirtyEntries.delete(entry);
    renderEntry(entry);
    updateStopButton();
    scrollToBottom(false);
    announce(joinSentences(replyErrorText(entry), t("errorOffer")));
    bridge.emit("reply.error", { code: entry.error.code, detail: entry.error.detail });
  }

  function onFeedbackSaved(frame) {
    const entry = findById(frame.message_id) || state.lastFeedbackEntry;
    if (!entry) return;
    entry.feedbackThanks = true;
    // Only the label changes: re-rendering would disturb a comment being typed.
    const group = entry.element && entry.element.querySelector(".cs-feedback");
    if (group && !group.querySelector(".cs-feedback__thanks")) {
      group.append(h("span", { class: "cs-feedback__thanks", testid: "feedback-thanks", text: t("feedbackThanks") }));
    }
  }

  function onHandoffStarted(frame) {
    const ticket = frame.ticket_id != null ? frame.ticket_id : frame.ticket;
    setHandoff({ ticketId: ticket == null ? null : ticket, agentName: state.handoff ? state.handoff.agentName : null });
    if (state.awaiting && !state.awaiting.text) removeEntry(state.awaiting);
    removePendingHandoffNotice();
    addLocalNotice(t("handoffStarted"));
    bridge.emit("handoff", { ticket_id: ticket == null ? null : ticket });
  }

  function onAgentJoined(frame) {
    const name = frame.agent_name || (frame.agent && frame.agent.name) || null;
    setHandoff({ ticketId: state.handoff ? state.handoff.ticketId : null, agentName: name });
    addLocalNotice(t("agentJoined", { name: name || t("someone") }));
  }

  function onAgentMessage(frame) {
    const message = frame.message && typeof frame.message === "object" ? frame.message : null;
    if (!message) return;
    const entry = upsertMessage(Object.assign({ role: "agent" }, message, {
      agent_name: message.agent_name || frame.agent_name || (state.handoff && state.handoff.agentName) || null,
    }));
    if (entry && entry.text) announce(t("announceAgent", { name: entry.agentName || t("agentLabel"), text: entry.text }));
    bridge.noteIncoming();
  }

  function upsertMessage(message) {
    const existing = findById(message.id);
    if (existing) {
      applyMessage(existing, message);
      renderEntry(existing);
      return existing;
    }
    return appendEntry(entryFromMessage(message));
  }

  function onErrorFrame(frame) {
    const code = frame.code || "unknown";
    const known = strings.frameErrors[code];
    showNotice(known || (frame.detail ? t("frameErrors.unknown", { detail: frame.detail }) : t("replyErrors.unknown")));
    // A message that was refused (for example over the rate limit) is marked so it can be re-sent.
    let refused = frame.client_id ? state.byClientId.get(frame.client_id) : null;
    if (!refused && code === "rate_limited") {
      const waiting = Array.from(state.outbox.values()).filter((item) => item.sentAt);
      refused = waiting.length ? waiting[waiting.length - 1].entry : null;
    }
    if (refused && refused.id == null) {
      state.outbox.delete(refused.clientId);
      refused.sendFailed = true;
      refused.sendError = known || frame.detail || t("notSent");
      renderEntry(refused);
    }
  }

  function setHandoff(value) {
    state.handoff = value;
    if (state.conversation) storage.set(conversationKey("handoff", state.conversation.id), value);
    updateHeader();
    // Retry and "talk to a person" offers inside failed replies change with the handoff state.
    for (const entry of state.entries) if (entry.status === "failed") renderEntry(entry);
  }

  // ------------------------------------------------------------------ sending

  function sendMessage(text, drafts, options) {
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
    stickToBottom = true;
    scrollToBottom(true);
    if (options && options.retryOf) {
      options.retryOf.retried = true;
      renderEntry(options.retryOf);
    }
    deliver(entry);
    return entry;
  }

  async function deliver(entry) {
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
      entry.sendError = error && error.code === "rate_limited" ? strings.frameErrors.rate_limited : t("createFailed");
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

  function resendCustomerEntry(entry) {
    // Not accepted yet, so the same client_id is safe: the server saves it at most once.
    entry.sendFailed = false;
    entry.sendError = null;
    renderEntry(entry);
    deliver(entry);
  }

  function retryReply(reply) {
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

  function cancelReply() {
    const reply = currentStreamingReply();
    if (!reply || reply.replyId == null) return;
    sendFrame({ type: "cancel", reply_id: reply.replyId });
    ui.stopButton.disabled = true;
    window.setTimeout(() => {
      ui.stopButton.disabled = false;
    }, 1500);
  }

  function giveFeedback(entry, rating) {
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

  async function requestHandoff(reason) {
    if (state.handoff) return;
    ui.handoffButton.disabled = true;
    try {
      await ensureConversation();
    } catch (error) {
      ui.handoffButton.disabled = false;
      showNotice(t("createFailed"));
      return;
    }
    if (state.handoff) return;
    state.pendingHandoffNotice = addLocalNotice(t("handoffRequested"));
    sendOrQueue({ type: "handoff", reason });
    // Re-enabled if the server never confirms (handoff.started disables it for good).
    window.setTimeout(() => {
      if (!state.handoff) {
        ui.handoffButton.disabled = false;
        removePendingHandoffNotice();
      }
    }, 20000);
  }

  function removePendingHandoffNotice() {
    if (state.pendingHandoffNotice) {
      removeEntry(state.pendingHandoffNotice);
      state.pendingHandoffNotice = null;
    }
  }

  function startNewConversation() {
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

  // ------------------------------------------------------------------ customer satisfaction

  function maybeOfferCsat() {
    if (state.csatDone || state.csatPromptShown) return;
    if (state.completedRepliesThisVisit < CSAT_PROMPT_AFTER_REPLIES) return;
    showCsatPrompt(false);
    ui.transcriptInner.append(state.csatPromptElement);
    scrollToBottom(false);
  }

  function showCsatPrompt(previous) {
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

  function hideCsatPrompt() {
    if (state.csatPromptElement) state.csatPromptElement.remove();
    state.csatPromptElement = null;
  }

  function buildCsatDialog() {
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

  function setCsatScore(score) {
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

  function openCsatDialog(targetConversation, presetScore) {
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

  function closeCsatDialog() {
    ui.csatTarget = null;
    if (ui.csatDialog.open) {
      if (typeof ui.csatDialog.close === "function") ui.csatDialog.close();
      else ui.csatDialog.removeAttribute("open");
    }
    if (ui.csatReturnFocus && ui.csatReturnFocus.isConnected) ui.csatReturnFocus.focus();
  }

  function submitCsat() {
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
    // The previous conversation: a short-lived socket of its own delivers the rating.
    sendToOtherConversation(target, frame, "csat.saved").then(() => {
      state.previousConversation = null;
      hideCsatPrompt();
      addLocalNotice(t("csatThanks"));
    }, () => showNotice(t("replyErrors.unknown")));
    closeCsatDialog();
    ui.csatSubmit.disabled = false;
  }

  function onCsatSaved() {
    state.csatDone = true;
    if (state.conversation) storage.set(conversationKey("csat", state.conversation.id), true);
    hideCsatPrompt();
    addLocalNotice(t("csatThanks"));
  }

  function sendToOtherConversation(conversation, frame, expectedType) {
    return new Promise((resolve, reject) => {
      let settled = false;
      const socket = new WebSocket(websocketUrl(conversation.ws_path));
      const finish = (ok) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try {
          socket.close(1000);
        } catch (error) {
          /* closed */
        }
        if (ok) resolve();
        else reject(new Error("not delivered"));
      };
      const timer = window.setTimeout(() => finish(false), 15000);
      socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "hello", token: conversation.token })));
      socket.addEventListener("message", (event) => {
        let data = null;
        try {
          data = JSON.parse(event.data);
        } catch (error) {
          return;
        }
        if (data && data.type === "ready") socket.send(JSON.stringify(frame));
        else if (data && data.type === expectedType) finish(true);
        else if (data && data.type === "error") finish(false);
      });
      socket.addEventListener("close", () => finish(false));
    });
  }

  // ------------------------------------------------------------------ lightbox

  function buildLightbox() {
    ui.lightboxImage = h("img", { class: "cs-lightbox__image", alt: "" });
    ui.lightbox = h("dialog", { class: "cs-lightbox", testid: "lightbox" },
      h("button", { type: "button", class: "cs-lightbox__close", "aria-label": t("closeImage"), onclick: () => ui.lightbox.close() }, icon("close")),
      ui.lightboxImage);
    ui.lightbox.addEventListener("click", (event) => {
      if (event.target === ui.lightbox) ui.lightbox.close();
    });
  }

  function openLightbox(url, alt) {
    if (!url) return;
    ui.lightboxImage.src = url;
    ui.lightboxImage.alt = alt;
    if (typeof ui.lightbox.showModal === "function") ui.lightbox.showModal();
    else window.open(url, "_blank", "noopener");
  }

  // ------------------------------------------------------------------ composer and images

  function resizeInput() {
    const input = ui.input;
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 168)}px`;
  }

  function wireComposer() {
    ui.input.addEventListener("input", resizeInput);
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
      stickToBottom = isNearBottom();
    }, { passive: true });

    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || event.defaultPrevented) return;
      if (ui.csatDialog.open || ui.lightbox.open) return;
      if (config.embedded && framed) bridge.requestClose();
    });

    window.addEventListener("online", () => {
      if (!connection.ready && state.conversation) {
        connection.attempt = 0;
        reconnectNow();
      }
    });
    window.addEventListener("offline", () => {
      if (!connection.ready && state.conversation) showBanner("reconnecting");
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") reconnectNow();
    });
  }

  function submitComposer() {
    const text = ui.input.value.trim();
    const drafts = state.drafts.filter((draft) => draft.status !== "failed");
    if (!text && !drafts.length) return;
    ui.input.value = "";
    resizeInput();
    state.drafts = [];
    renderDrafts();
    sendMessage(text, drafts);
  }

  function addFiles(files) {
    if (!files.length) return;
    const room = config.maxAttachments - state.drafts.length;
    if (files.length > room) showNotice(t("uploadErrors.tooMany", { max: config.maxAttachments }));
    for (const file of files.slice(0, Math.max(0, room))) addFile(file);
  }

  function addFile(file) {
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

  async function processDraft(draft, file) {
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

  class UploadRefusal extends Error {
    constructor(code, detail) {
      super(detail || code);
      this.code = code;
      this.detail = detail;
    }
  }

  function uploadErrorText(error, name) {
    const values = { name, size: formatBytes(config.maxUploadBytes), max: config.maxAttachments };
    const code = error && error.code;
    if (code && strings.uploadErrors[code]) return t(`uploadErrors.${code}`, values);
    if (error instanceof ApiError && error.status === 0) return t("uploadErrors.network", values);
    if (error && error.detail) return joinSentences(t("uploadErrors.unknown", values), error.detail);
    if (error instanceof ApiError) return t("uploadErrors.unknown", values);
    return t(error instanceof TypeError ? "uploadErrors.network" : "createFailed", values);
  }

  function discardDraft(draft) {
    const index = state.drafts.indexOf(draft);
    if (index >= 0) state.drafts.splice(index, 1);
    if (draft.element) draft.element.remove();
    renderDrafts();
  }

  function removeDraft(draft) {
    draft.status = "failed";
    if (draft.xhr) draft.xhr.abort();
    if (draft.previewUrl) URL.revokeObjectURL(draft.previewUrl);
    discardDraft(draft);
    ui.input.focus();
  }

  async function decodeImage(file) {
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

  function canvasToBlob(canvas, quality) {
    return new Promise((resolve, reject) => {
      canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new UploadRefusal("corrupt_image"))), "image/jpeg", quality);
    });
  }

  function jpegName(name) {
    const base = name.replace(/\.[^./\\]+$/, "") || "image";
    return `${base}.jpg`;
  }

  // Scale to at most maxImageSide on the long side and re-encode as JPEG; small images that
  // are already acceptable are sent as they are.
  async function prepareImage(file) {
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

  function uploadDraft(draft) {
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

  function renderDrafts() {
    ui.drafts.hidden = state.drafts.length === 0;
    const elements = state.drafts.map((draft) => {
      if (!draft.element) renderDraft(draft);
      return draft.element;
    });
    ui.drafts.replaceChildren(...elements);
    ui.attachButton.disabled = state.drafts.length >= config.maxAttachments;
  }

  function renderDraft(draft) {
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

  function updateDraftProgress(draft) {
    if (!draft.progressElement) return;
    const percent = Math.round((draft.progress || 0) * 100);
    draft.progressElement.setAttribute("aria-valuenow", String(percent));
    const fill = draft.progressElement.querySelector(".cs-draft__bar-fill");
    if (fill) fill.style.width = `${draft.status === "uploading" ? Math.max(percent, 4) : 0}%`;
  }

  // ------------------------------------------------------------------ embedding bridge

  const bridge = {
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

  function handleHostMessage(event) {
    // Only the page that frames us may command the widget; the server's frame-ancestors
    // policy decides which pages those are.
    if (!framed || event.source !== window.parent) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.source !== "cs-widget" || typeof data.type !== "string") return;
    if (!bridge.parentOrigin) {
      bridge.parentOrigin = event.origin && event.origin !== "null" ? event.origin : "*";
      bridge.flush();
    } else if (bridge.parentOrigin !== "*" && event.origin !== bridge.parentOrigin) {
      return;
    }
    const payload = data.payload;
    switch (data.type) {
      case "host.hello":
        if (payload && typeof payload === "object") {
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

  function openedByHost() {
    bridge.isOpen = true;
    state.unread = 0;
    bridge.post("widget.unread", { count: 0 });
    if (window.matchMedia("(pointer: fine)").matches) ui.input.focus({ preventScroll: true });
    reconnectNow();
  }

  function prefill(text) {
    if (typeof text !== "string") return;
    ui.input.value = text.slice(0, 8000);
    resizeInput();
    if (bridge.isOpen) ui.input.focus({ preventScroll: true });
  }

  function cleanMetadata(value) {
    try {
      const copy = JSON.parse(JSON.stringify(value));
      return copy && typeof copy === "object" && !Array.isArray(copy) ? copy : {};
    } catch (error) {
      return {};
    }
  }

  // ------------------------------------------------------------------ start

  function start() {
    applyBrandColor();
    buildInterface();
    window.addEventListener("message", handleHostMessage);
    loadConversationState();
    renderAll();
    updateHeader();
    loadQuickEntries();
    if (state.conversation) connect();
    if (framed) window.parent.postMessage({ source: "cs-widget", type: "widget.ready", payload: null }, "*");
    if (!config.embedded && window.matchMedia("(pointer: fine)").matches) ui.input.focus();
    // A hook for the browser tests: the internals of this page, read-only.
    window.__csWidget = { config, state, connection };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
