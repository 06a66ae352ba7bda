// Markdown → safe DOM for untrusted model output.
//
// Pipeline: marked (raw HTML in the markdown is escaped and shown as text,
// except a bare <br>) → DOMPurify into an inert DocumentFragment with a small
// allow-list → our own pass over links and images → highlight.js on code
// blocks. Nothing here ever assigns model text to innerHTML of a live node;
// the fragment is only attached by the caller once it is clean.

import { Marked } from '../vendor/marked/marked.esm.js';
import DOMPurify from '../vendor/dompurify/purify.es.mjs';
import hljs from '../vendor/highlightjs/highlight.min.js';

hljs.configure({ ignoreUnescapedHTML: true, throwUnescapedHTML: false });

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    // Raw HTML written by the model is displayed, not interpreted.
    html({ text }) {
      if (/^<br\s*\/?>$/i.test(text.trim())) return '<br>';
      return escapeHtml(text);
    },
    // Task lists: no <input> elements (they are forbidden below).
    checkbox({ checked }) {
      return `<span class="task-box">${checked ? '☑' : '☐'}</span> `;
    },
  },
});

const ALLOWED_TAGS = [
  'a', 'b', 'blockquote', 'br', 'caption', 'code', 'dd', 'del', 'details', 'dl', 'dt', 'em',
  'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'i', 'img', 'ins', 'kbd', 'li', 'mark', 'ol', 'p',
  'pre', 's', 'span', 'strong', 'sub', 'summary', 'sup', 'table', 'tbody', 'td', 'tfoot', 'th',
  'thead', 'tr', 'ul',
];
const ALLOWED_ATTR = ['href', 'title', 'alt', 'src', 'class', 'start', 'align', 'colspan', 'rowspan'];
const FORBID_TAGS = [
  'style', 'script', 'iframe', 'frame', 'frameset', 'form', 'input', 'button', 'textarea',
  'select', 'option', 'object', 'embed', 'applet', 'svg', 'math', 'link', 'meta', 'base',
  'template', 'noscript', 'audio', 'video', 'source', 'track', 'canvas', 'dialog', 'portal',
];
const FORBID_ATTR = ['style', 'id', 'name', 'srcset', 'formaction', 'action', 'ping', 'background', 'xlink:href'];

const PURIFY_CONFIG = {
  ALLOWED_TAGS,
  ALLOWED_ATTR,
  FORBID_TAGS,
  FORBID_ATTR,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  SANITIZE_DOM: true,
  RETURN_DOM_FRAGMENT: true,
};

// Classes are only kept where marked puts them; model-written HTML is
// escaped anyway, but this keeps content from borrowing the app's classes.
const CODE_CLASS = /^language-[\w+#.-]{1,40}$/;
DOMPurify.addHook('uponSanitizeAttribute', (node, data) => {
  const name = data.attrName;
  if (name.startsWith('on')) {
    data.keepAttr = false;
  } else if (name === 'class') {
    const ok =
      (node.nodeName === 'CODE' && CODE_CLASS.test(data.attrValue)) ||
      (node.nodeName === 'SPAN' && data.attrValue === 'task-box');
    if (!ok) data.keepAttr = false;
  }
});

const LINK_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);
const DATA_IMAGE = /^data:image\/(?:png|gif|jpe?g|webp|avif);base64,[a-z0-9+/=\s]+$/i;

function safeLinkHref(raw) {
  if (!raw) return null;
  const value = raw.trim();
  // Only absolute http(s)/mailto links are kept.
  if (!/^(?:https?:\/\/|mailto:)/i.test(value)) return null;
  try {
    const url = new URL(value);
    return LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function safeImageSrc(raw) {
  if (!raw) return null;
  const value = raw.trim();
  if (DATA_IMAGE.test(value)) return value;
  // Same-origin relative only: no scheme, no protocol-relative "//" or "/\".
  if (/^[a-z][a-z0-9+.-]*:/i.test(value) || /^[\\/]{2}/.test(value) || /^\/\\/.test(value)) return null;
  if (/[\u0000-\u001f\\]/.test(value)) return null;
  try {
    const url = new URL(value, window.location.href);
    return url.origin === window.location.origin ? value : null;
  } catch {
    return null;
  }
}

function fixLinksAndImages(root) {
  for (const a of Array.from(root.querySelectorAll('a'))) {
    const href = safeLinkHref(a.getAttribute('href'));
    if (href === null) {
      // Unwrap: keep the text, drop the link.
      const span = a.ownerDocument.createElement('span');
      while (a.firstChild) span.appendChild(a.firstChild);
      a.replaceWith(span);
      continue;
    }
    a.setAttribute('href', href);
    a.setAttribute('target', '_blank');
    a.setAttribute('rel', 'noopener noreferrer nofollow');
    a.setAttribute('referrerpolicy', 'no-referrer');
  }
  for (const img of Array.from(root.querySelectorAll('img'))) {
    const src = safeImageSrc(img.getAttribute('src'));
    if (src === null) {
      const alt = (img.getAttribute('alt') || '').trim();
      const span = img.ownerDocument.createElement('span');
      span.className = 'image-placeholder';
      span.textContent = `[image${alt ? ': ' + alt : ''}]`;
      img.replaceWith(span);
      continue;
    }
    img.setAttribute('src', src);
    img.setAttribute('loading', 'lazy');
    img.setAttribute('referrerpolicy', 'no-referrer');
  }
}

function highlight(root, { autodetect }) {
  for (const code of Array.from(root.querySelectorAll('pre > code'))) {
    const m = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
    const lang = m ? m[1].toLowerCase() : null;
    if (lang && !hljs.getLanguage(lang)) continue; // unknown language: plain text
    if (!lang && (!autodetect || code.textContent.length > 20000)) continue;
    try {
      // highlight.js escapes the code text itself.
      hljs.highlightElement(code);
    } catch {
      /* leave the block as plain text */
    }
  }
}

/**
 * Render untrusted markdown to a sanitized DocumentFragment.
 * @param {string} text markdown
 * @param {{streaming?: boolean}} [options] while streaming, code blocks without
 *   a language are not auto-detected (it is costly and flickers).
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text, options = {}) {
  const streaming = Boolean(options.streaming);
  let html;
  try {
    html = marked.parse(String(text ?? ''));
  } catch {
    html = `<p>${escapeHtml(text)}</p>`;
  }
  // DOMPurify parses into an inert document: nothing loads or runs here.
  const fragment = DOMPurify.sanitize(html, PURIFY_CONFIG);
  fixLinksAndImages(fragment);
  highlight(fragment, { autodetect: !streaming });
  return document.importNode(fragment, true);
}

/** Replace the children of `element` with the rendered markdown. */
export function renderMarkdownInto(element, text, options = {}) {
  element.replaceChildren(renderMarkdown(text, options));
}
