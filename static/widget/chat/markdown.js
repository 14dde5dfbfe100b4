/*
 * Markdown for the assistant's replies: markdown-it renders (raw HTML off), DOMPurify sanitises.
 * Both are the vendored classic scripts (static/vendor/, globals window.markdownit and
 * window.DOMPurify), loaded before the widget's modules. sanitizeHtml is exported on its own so
 * that the browser tests can feed it hostile HTML directly.
 */



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

// HTML made safe to insert: only the tags and attributes above, links only to http(s) and mailto
// (opening in a new tab), no class but the widget's own. Without DOMPurify, the HTML as text.
export function sanitizeHtml(html) {
  setUpMarkdown();
  if (!purifyReady) {
    const fragment = document.createDocumentFragment();
    fragment.append(String(html || ""));
    return fragment;
  }
  return window.DOMPurify.sanitize(String(html || ""), PURIFY_CONFIG);
}

// What the transcript shows for an assistant's Markdown: rendered by markdown-it, then sanitised.
export function renderMarkdownInto(element, text) {
  setUpMarkdown();
  if (!markdownRenderer || !purifyReady) {
    // Without both libraries the reply is still readable, as plain text.
    element.textContent = text;
    element.classList.add("cs-plain");
    return;
  }
  element.replaceChildren(sanitizeHtml(markdownRenderer.render(text || "")));
}
