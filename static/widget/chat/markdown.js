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

// Citation markers as the model writes them and the server reads them (inference/grounding.py): [1],
// [1, 2], [1][2], and the full-width 【1】 of Chinese. The spaces before one go with it.
const MARKER_PATTERN = /[ \t]*[\[【]\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]】]/g;

function markerNumbers(match) {
  return match[1].split(/\s*[,，、]\s*/).map(Number);
}

// The numbers a reply's markers name, each once, in the order the text first uses them.
export function citationMarkerNumbers(text) {
  const numbers = [];
  for (const match of String(text || "").matchAll(MARKER_PATTERN)) {
    for (const number of markerNumbers(match)) if (!numbers.includes(number)) numbers.push(number);
  }
  return numbers;
}

// Text nodes where a marker may become a link: not inside a link, code or a preformatted block.
function markerTextNodes(root) {
  const nodes = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let parent = node.parentNode; parent && parent !== root; parent = parent.parentNode) {
        if (["A", "CODE", "PRE"].includes(parent.nodeName)) return NodeFilter.FILTER_REJECT;
      }
      MARKER_PATTERN.lastIndex = 0;
      return MARKER_PATTERN.test(node.nodeValue) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_SKIP;
    },
  });
  while (walker.nextNode()) nodes.push(walker.currentNode);
  return nodes;
}

// Turn the markers in rendered (already sanitised) text into superscript links. `sourceFor(number)`
// gives {number, href, label} for a marker's number, or null: a marker naming no source stays text.
// The links are built as elements with text content, never as HTML, so nothing here is parsed.
export function linkCitationMarkers(root, sourceFor) {
  for (const node of markerTextNodes(root)) {
    const text = node.nodeValue;
    const fragment = document.createDocumentFragment();
    let position = 0;
    for (const match of text.matchAll(MARKER_PATTERN)) {
      const sources = markerNumbers(match).map(sourceFor).filter(Boolean);
      if (!sources.length) continue;
      fragment.append(text.slice(position, match.index));
      const shown = new Set();
      for (const source of sources) {
        if (shown.has(source.number)) continue;
        shown.add(source.number);
        const link = document.createElement("a");
        link.className = "cs-cite__link";
        link.href = source.href;
        link.target = "_blank";
        link.rel = "noopener";
        link.textContent = String(source.number);
        link.setAttribute("aria-label", source.label);
        link.title = source.title;
        link.dataset.testid = "citation-marker";
        const sup = document.createElement("sup");
        sup.className = "cs-cite";
        sup.append(link);
        fragment.append(sup);
      }
      position = match.index + match[0].length;
    }
    if (position === 0) continue;
    fragment.append(text.slice(position));
    node.replaceWith(fragment);
  }
}
