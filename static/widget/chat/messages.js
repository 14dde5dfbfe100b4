/*
 * Messages: every sentence the widget shows, in English and Simplified Chinese, and the few
 * helpers that fill them in.
 */

import { config, hostSettings } from "./config.js";

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
    truncated: "This reply was cut short.",
    sources: "Sources",
    sourceLink: "Source {number}: {title}",
    opensInNewTab: "(opens in a new tab)",
    fromFaq: "From our FAQ",
    fromKnowledge: "From our help center",
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
    // The same sentence the server saves as the handoff's system message (conversations/services.py).
    handoffStarted: "A person will join this conversation shortly.",
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
      busy: "“{name}” couldn't be processed right now because many images are arriving at once. Please try again in a moment.",
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
    truncated: "回复过长，已被截断。",
    sources: "参考资料",
    sourceLink: "参考资料 {number}：{title}",
    opensInNewTab: "（在新标签页中打开）",
    fromFaq: "来自常见问题",
    fromKnowledge: "来自帮助中心",
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
      busy: "当前上传的图片较多，“{name}”暂时无法处理，请稍后重试。",
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

export const strings = STRINGS[config.locale] || STRINGS.en;

export function format(template, values) {
  return String(template).replace(/\{(\w+)\}/g, (match, name) =>
    values && values[name] != null ? String(values[name]) : match);
}

export function t(key, values) {
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
export function joinSentences(...parts) {
  return parts.filter(Boolean).join(config.locale === "zh-Hans" ? "" : " ");
}

export function formatBytes(bytes) {
  if (bytes >= 1024 * 1024) return `${Math.round((bytes / (1024 * 1024)) * 10) / 10} MB`;
  return `${Math.round(bytes / 1024)} KB`;
}

// The assistant's name: the server's assistant profile, else the embedding page's, else the default.
export function assistantTitle() {
  return config.title || hostSettings.title || t("defaultTitle");
}

// The greeting: the embedding page's (through the bridge, from an allowed origin), else the default.
export function greetingText() {
  return hostSettings.greeting || t("defaultGreeting");
}
