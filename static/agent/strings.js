/*
 * Every word the console shows, in English and Simplified Chinese. t(key, params) fills {name}
 * placeholders; a key missing in one language falls back to English, then to the key itself.
 */

export const LOCALES = ["en", "zh-Hans"];

export const STRINGS = {
  en: {
    "app.title": "Agent console",
    "app.titleUnread": "({count}) Agent console",
    "app.skip": "Skip to the conversation",
    "language.label": "Language",
    "language.en": "English",
    "language.zh-Hans": "简体中文",
    "presence.accepting": "Accepting conversations",
    "presence.online": "{count} online",
    "presence.error": "Could not change whether you accept conversations: {detail}",
    "signOut": "Sign out",
    "connection.connecting": "Connecting…",
    "connection.reconnecting": "Connection lost. Reconnecting…",
    "connection.online": "Live",

    "login.title": "Sign in to the agent console",
    "login.username": "Username",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.busy": "Signing in…",
    "login.failed": "Signing in failed: {detail}",
    "forbidden.title": "You may not use the agent console",
    "forbidden.body":
      "You are signed in as {username}, who is not in the Agent, Supervisor or Manager group. Ask an administrator to add you, or sign in as someone else.",

    "queue.label": "Conversations",
    "queue.tabs": "Queues",
    "queue.waiting": "Waiting",
    "queue.mine": "Mine",
    "queue.all": "All",
    "queue.empty.waiting": "Nobody is waiting. New conversations appear here as customers ask for a person.",
    "queue.empty.mine": "You have no conversations. Claim one from Waiting.",
    "queue.empty.all": "There are no unresolved conversations.",
    "queue.help": "Use the arrow keys or j and k to move, Enter to open.",
    "queue.waited": "waiting {time}",
    "queue.assignee": "with {name}",
    "queue.noMessage": "No messages yet",
    "queue.photo": "Photo",
    "queue.unread": "new",
    "queue.newWaiting": "New conversation waiting: {preview}",
    "queue.loadFailed": "Could not load the queue: {detail}",

    "trigger.customer_button": "Pressed “talk to a person”",
    "trigger.customer_phrase": "Asked for a person",
    "trigger.model_tool": "Assistant handed off",
    "trigger.knowledge_miss": "Knowledge base had nothing",
    "trigger.thumbs_down": "Thumbs-down in a row",
    "trigger.other": "Other",
    "locale.en": "English",
    "locale.zh-Hans": "中文",

    "duration.seconds": "{count} s",
    "duration.minutes": "{count} min",
    "duration.hours": "{hours} h {minutes} min",
    "duration.days": "{days} d {hours} h",

    "conversation.none": "Choose a conversation from the list to read it.",
    "conversation.loading": "Loading the conversation…",
    "conversation.loadFailed": "Could not load the conversation: {detail}",
    "conversation.label": "Conversation",
    "conversation.transcript": "Transcript",
    "ticket.trigger": "Trigger",
    "ticket.reason": "Reason",
    "ticket.waited": "Waited",
    "ticket.firstResponse": "First response",
    "ticket.resolution": "Resolution",
    "ticket.assignee": "Assignee",
    "ticket.nobody": "Nobody yet",
    "ticket.you": "You ({name})",
    "ticket.status.open": "Waiting",
    "ticket.status.assigned": "Claimed",
    "ticket.status.resolved": "Resolved",
    "ticket.none": "No open ticket: the assistant is answering this conversation.",
    "ticket.locale": "Language",
    "ticket.csat": "Customer rating",
    "ticket.csatValue": "{score} of 5",

    "action.claim": "Claim",
    "action.resolve": "Resolve",
    "action.resolveHint": "The customer is asked to rate the conversation.",
    "action.handBack": "Hand back to AI",
    "action.claimed": "You claimed this conversation.",
    "action.resolved": "Resolved. The customer was asked to rate the conversation.",
    "action.handedBack": "Handed back: the assistant answers again.",
    "action.claimedByOther": "{name} has this conversation",
    "action.failed": "That did not work: {detail}",
    "action.confirmHandBack": "Hand this conversation back to the assistant?",

    "role.customer": "Customer",
    "role.assistant": "Assistant",
    "role.agent": "Agent",
    "role.system": "Notice",
    "message.note": "Internal note",
    "message.noteHint": "Only colleagues see internal notes.",
    "message.streaming": "Writing…",
    "message.failed": "The reply failed: {detail}",
    "message.cancelled": "Stopped",
    "message.truncated": "(cut short)",
    "message.image": "Image {number} from the customer",
    "message.sources": "Sources",
    "message.feedback.up": "Customer rated this reply helpful",
    "message.feedback.down": "Customer rated this reply unhelpful",
    "message.feedbackComment": "“{comment}”",
    "message.new": "New message from the customer: {preview}",
    "message.agentNew": "{name}: {preview}",

    "typing.customer": "Customer is typing…",
    "typing.agent": "{name} is typing…",
    "typing.agentNote": "{name} is writing a note…",

    "composer.label": "Message",
    "composer.mode": "Send as",
    "composer.reply": "Reply",
    "composer.note": "Internal note",
    "composer.placeholderReply": "Reply to the customer. Enter sends, Shift+Enter for a new line, / for canned replies",
    "composer.placeholderNote": "A note for colleagues only. Enter saves it",
    "composer.send": "Send",
    "composer.saveNote": "Add note",
    "composer.sending": "Sending…",
    "composer.sendFailed": "Not sent: {detail}",
    "composer.claimFirst": "Claim this conversation to reply to the customer. You can leave an internal note without claiming it.",
    "composer.closed": "The ticket is resolved: write again only as an internal note.",
    "composer.shortcuts": "Shortcuts",

    "canned.label": "Canned replies",
    "canned.empty": "No canned reply matches “/{query}”.",
    "canned.loadFailed": "Canned replies are not available: {detail}",
    "canned.anyLanguage": "any language",
    "canned.inserted": "Inserted /{shortcode}: edit it, then send.",

    "assist.button": "Draft with AI",
    "assist.cancel": "Stop draft",
    "assist.drafting": "Drafting a reply…",
    "assist.done": "AI draft: edit it, then send. It is never sent without you.",
    "assist.stale": "A newer customer message arrived: this draft may be out of date",
    "assist.error": "The AI draft failed: {detail}",
    "assist.unavailable": "Drafting with AI is not available here: {detail}",
    "assist.needClaim": "Claim the conversation to draft a reply with AI.",
    "assist.offline": "Not connected: drafting needs the live connection.",

    "shortcuts.title": "Keyboard shortcuts",
    "shortcuts.queue": "j / k or ↓ / ↑: move in the list; Enter: open",
    "shortcuts.send": "Enter: send; Shift+Enter: new line",
    "shortcuts.canned": "/ at the start: canned replies (↑ ↓, Enter or Tab inserts, Esc closes)",
    "shortcuts.assist": "Alt+D: draft with AI",
    "shortcuts.note": "Alt+N: switch between reply and internal note",
    "shortcuts.claim": "Alt+C: claim",

    "error.network": "the server could not be reached",
    "error.unknown": "something went wrong",
    "socket.error": "{detail}",
    "assigned.toYou": "A conversation was assigned to you.",
  },
  "zh-Hans": {
    "app.title": "客服工作台",
    "app.titleUnread": "({count}) 客服工作台",
    "app.skip": "跳到会话",
    "language.label": "语言",
    "language.en": "English",
    "language.zh-Hans": "简体中文",
    "presence.accepting": "接收新会话",
    "presence.online": "{count} 人在线",
    "presence.error": "无法更改接收状态：{detail}",
    "signOut": "退出登录",
    "connection.connecting": "正在连接…",
    "connection.reconnecting": "连接已断开，正在重新连接…",
    "connection.online": "实时",

    "login.title": "登录客服工作台",
    "login.username": "用户名",
    "login.password": "密码",
    "login.submit": "登录",
    "login.busy": "正在登录…",
    "login.failed": "登录失败：{detail}",
    "forbidden.title": "您无权使用客服工作台",
    "forbidden.body": "您当前以 {username} 登录，该账号不在客服（Agent）、主管（Supervisor）或经理（Manager）组中。请联系管理员添加，或换一个账号登录。",

    "queue.label": "会话",
    "queue.tabs": "队列",
    "queue.waiting": "等待中",
    "queue.mine": "我的",
    "queue.all": "全部",
    "queue.empty.waiting": "暂无等待的客户。客户请求人工服务时，会话会出现在这里。",
    "queue.empty.mine": "您还没有会话。请从“等待中”认领。",
    "queue.empty.all": "没有未解决的会话。",
    "queue.help": "用方向键或 j、k 移动，回车打开。",
    "queue.waited": "已等待 {time}",
    "queue.assignee": "由 {name} 处理",
    "queue.noMessage": "暂无消息",
    "queue.photo": "图片",
    "queue.unread": "新",
    "queue.newWaiting": "新的等待会话：{preview}",
    "queue.loadFailed": "无法加载队列：{detail}",

    "trigger.customer_button": "点击了“转人工”",
    "trigger.customer_phrase": "要求人工服务",
    "trigger.model_tool": "助手转人工",
    "trigger.knowledge_miss": "知识库无答案",
    "trigger.thumbs_down": "连续差评",
    "trigger.other": "其他",
    "locale.en": "英文",
    "locale.zh-Hans": "中文",

    "duration.seconds": "{count} 秒",
    "duration.minutes": "{count} 分钟",
    "duration.hours": "{hours} 小时 {minutes} 分钟",
    "duration.days": "{days} 天 {hours} 小时",

    "conversation.none": "从左侧列表选择一个会话查看。",
    "conversation.loading": "正在加载会话…",
    "conversation.loadFailed": "无法加载会话：{detail}",
    "conversation.label": "会话",
    "conversation.transcript": "聊天记录",
    "ticket.trigger": "触发方式",
    "ticket.reason": "原因",
    "ticket.waited": "已等待",
    "ticket.firstResponse": "首次响应",
    "ticket.resolution": "解决用时",
    "ticket.assignee": "处理人",
    "ticket.nobody": "暂无",
    "ticket.you": "您（{name}）",
    "ticket.status.open": "等待中",
    "ticket.status.assigned": "已认领",
    "ticket.status.resolved": "已解决",
    "ticket.none": "没有待处理的工单：此会话由智能助手回答。",
    "ticket.locale": "语言",
    "ticket.csat": "客户评分",
    "ticket.csatValue": "{score} / 5 分",

    "action.claim": "认领",
    "action.resolve": "解决",
    "action.resolveHint": "系统会邀请客户为本次服务评分。",
    "action.handBack": "交还给智能助手",
    "action.claimed": "您已认领此会话。",
    "action.resolved": "已解决，已邀请客户评分。",
    "action.handedBack": "已交还，智能助手将继续回答。",
    "action.claimedByOther": "{name} 正在处理此会话",
    "action.failed": "操作失败：{detail}",
    "action.confirmHandBack": "将此会话交还给智能助手吗？",

    "role.customer": "客户",
    "role.assistant": "智能助手",
    "role.agent": "客服",
    "role.system": "通知",
    "message.note": "内部备注",
    "message.noteHint": "内部备注只有同事可见。",
    "message.streaming": "正在输入…",
    "message.failed": "回复失败：{detail}",
    "message.cancelled": "已停止",
    "message.truncated": "（已截断）",
    "message.image": "客户发送的第 {number} 张图片",
    "message.sources": "参考来源",
    "message.feedback.up": "客户认为此回复有帮助",
    "message.feedback.down": "客户认为此回复没有帮助",
    "message.feedbackComment": "“{comment}”",
    "message.new": "客户发来新消息：{preview}",
    "message.agentNew": "{name}：{preview}",

    "typing.customer": "客户正在输入…",
    "typing.agent": "{name} 正在输入…",
    "typing.agentNote": "{name} 正在写备注…",

    "composer.label": "消息",
    "composer.mode": "发送方式",
    "composer.reply": "回复",
    "composer.note": "内部备注",
    "composer.placeholderReply": "回复客户。回车发送，Shift+回车换行，输入 / 使用快捷回复",
    "composer.placeholderNote": "仅同事可见的备注。回车保存",
    "composer.send": "发送",
    "composer.saveNote": "添加备注",
    "composer.sending": "正在发送…",
    "composer.sendFailed": "未发送：{detail}",
    "composer.claimFirst": "认领此会话后才能回复客户。无需认领也可以添加内部备注。",
    "composer.closed": "工单已解决：只能添加内部备注。",
    "composer.shortcuts": "快捷键",

    "canned.label": "快捷回复",
    "canned.empty": "没有与“/{query}”匹配的快捷回复。",
    "canned.loadFailed": "快捷回复不可用：{detail}",
    "canned.anyLanguage": "任意语言",
    "canned.inserted": "已插入 /{shortcode}：修改后再发送。",

    "assist.button": "AI 起草",
    "assist.cancel": "停止起草",
    "assist.drafting": "正在起草回复…",
    "assist.done": "AI 草稿：请修改后发送，未经您确认不会发送。",
    "assist.stale": "客户发来了新消息：此草稿可能已过时",
    "assist.error": "AI 起草失败：{detail}",
    "assist.unavailable": "此处无法使用 AI 起草：{detail}",
    "assist.needClaim": "认领会话后才能使用 AI 起草。",
    "assist.offline": "未连接：起草需要实时连接。",

    "shortcuts.title": "键盘快捷键",
    "shortcuts.queue": "j / k 或 ↓ / ↑：在列表中移动；回车：打开",
    "shortcuts.send": "回车：发送；Shift+回车：换行",
    "shortcuts.canned": "开头输入 /：快捷回复（↑ ↓ 选择，回车或 Tab 插入，Esc 关闭）",
    "shortcuts.assist": "Alt+D：AI 起草",
    "shortcuts.note": "Alt+N：在回复与内部备注之间切换",
    "shortcuts.claim": "Alt+C：认领",

    "error.network": "无法连接服务器",
    "error.unknown": "出现错误",
    "socket.error": "{detail}",
    "assigned.toYou": "系统为您分配了一个会话。",
  },
};

let currentLocale = "en";

export function setLocale(locale) {
  currentLocale = LOCALES.includes(locale) ? locale : "en";
  document.documentElement.lang = currentLocale;
}

export function locale() {
  return currentLocale;
}

export function t(key, params) {
  const table = STRINGS[currentLocale] || STRINGS.en;
  let text = key in table ? table[key] : key in STRINGS.en ? STRINGS.en[key] : key;
  if (params) {
    text = text.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }
  return text;
}

// "3 min", "1 h 5 min", "2 d 3 h": how long since `since` (a Date) at `now` (milliseconds).
export function formatDuration(seconds) {
  const total = Math.max(0, Math.floor(seconds));
  if (total < 60) return t("duration.seconds", { count: total });
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return t("duration.minutes", { count: minutes });
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return t("duration.hours", { hours, minutes: minutes % 60 });
  return t("duration.days", { days: Math.floor(hours / 24), hours: hours % 24 });
}
