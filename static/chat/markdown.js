// Markdown → safe DOM for untrusted model output.
//
// Pipeline: marked (raw HTML in the markdown is escaped and shown as text,
// except a bare <br>; TeX formulas are kept verbatim as placeholders) →
// DOMPurify into an inert DocumentFragment with a small allow-list (the policy
// below) → our own pass over links and images → highlight.js on code blocks →
// KaTeX fills the formula placeholders (math.js, with its own policy). Nothing
// here ever assigns model text to innerHTML of a live node; a fragment is only
// attached once it is clean.

import { Lexer, Marked } from '../vendor/marked/marked.esm.js';
import DOMPurify from '../vendor/dompurify/purify.es.mjs';
import hljs from '../vendor/highlightjs/highlight.min.js';
import { MAX_TEX_LENGTH, renderMath } from './math.js';

hljs.configure({ ignoreUnescapedHTML: true, throwUnescapedHTML: false });

const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

// --- TeX formulas -------------------------------------------------------------------
//
// $…$ and \(…\) inline; $$…$$ and \[…\] display (a block of their own lines, or
// within a paragraph). They are found by the lexer, so never inside code spans
// or blocks (those are taken whole before a formula's delimiter is reached), and
// their source is kept verbatim: markdown's backslash escapes (\, → ,) and
// emphasis do not apply inside. A formula that has not closed yet (still
// streaming) is plain text. Prices stay prices: an inline $ needs a non-space
// after the opening $ and before the closing one, and no digit right after the
// closing one ("$5 and $10"); a \$ is a dollar sign.

/** Where the first unescaped `close` is in `src` at or after `from`, within MAX_TEX_LENGTH (-1 if none). */
function closingIndex(src, close, from) {
  const limit = Math.min(src.length, from + MAX_TEX_LENGTH + close.length);
  for (let i = from; i < limit; i += 1) {
    const c = src[i];
    if (c === '\\' && close[0] !== '\\') {
      i += 1; // an escaped character, e.g. \$ inside $…$
    } else if (c === '\\') {
      if (src.startsWith(close, i)) return i;
      i += 1; // \\ or any other control sequence: not the closing \) or \]
    } else if (src.startsWith(close, i)) {
      return i;
    }
  }
  return -1;
}

const INLINE_MATH = [
  ['$$', '$$', true],
  ['\\(', '\\)', false],
  ['\\[', '\\]', true],
  ['$', '$', false],
];

/** A formula at the start of inline `src`: {raw, text, display}, or null. */
function inlineMath(src) {
  for (const [open, close, display] of INLINE_MATH) {
    if (!src.startsWith(open)) continue;
    if (open === '$') {
      // $…$: not "$ x$", not "$x $", not "$5 and $10" (a digit right after the closing $).
      if (src.length < 3 || /\s|\$/.test(src[1])) return null;
      const end = closingIndex(src, '$', 1);
      if (end === -1 || /\s/.test(src[end - 1]) || /\d/.test(src[end + 1] || '')) return null;
      const text = src.slice(1, end);
      if (text.includes('`')) return null; // a code span starts in it: the code span wins
      return { raw: src.slice(0, end + 1), text, display };
    }
    const end = closingIndex(src, close, open.length);
    if (end === -1) return null;
    const text = src.slice(open.length, end);
    if (!text.trim() || text.includes('`')) return null;
    return { raw: src.slice(0, end + close.length), text, display };
  }
  return null;
}

// $$…$$ or \[…\] as a block: opening at the start of a line (up to 3 spaces in),
// closing at the end of a line, no blank line between.
const BLOCK_BODY = `((?:[^\\n]|\\n(?![ \\t]*\\n)){1,${MAX_TEX_LENGTH}}?)`;
const BLOCK_MATH = [
  [new RegExp(`^ {0,3}\\$\\$${BLOCK_BODY}\\$\\$[ \\t]*(?:\\n|$)`), '$$'],
  [new RegExp(`^ {0,3}\\\\\\[${BLOCK_BODY}\\\\\\][ \\t]*(?:\\n|$)`), '\\]'],
];

function blockMath(src) {
  for (const [pattern, close] of BLOCK_MATH) {
    const m = pattern.exec(src);
    // "$$a$$ and $$b$$" is not one block: those are formulas within a paragraph.
    if (m && m[1].trim() && !m[1].includes(close)) return { raw: m[0], text: m[1] };
  }
  return null;
}

const mathExtensions = [
  {
    name: 'blockMath',
    level: 'block',
    // Where a block formula would interrupt a paragraph: only where one really begins.
    start(src) {
      const starts = /\n {0,3}(?:\$\$|\\\[)/g;
      for (let m; (m = starts.exec(src)); ) {
        if (blockMath(src.slice(m.index + 1))) return m.index + 1;
      }
      return undefined;
    },
    tokenizer(src) {
      const found = blockMath(src);
      return found ? { type: 'blockMath', raw: found.raw, text: found.text } : undefined;
    },
    renderer: ({ text }) => `<div class="math-display">${escapeHtml(text)}</div>\n`,
  },
  {
    name: 'inlineMath',
    level: 'inline',
    start(src) {
      const m = /\$|\\[([]/.exec(src);
      return m ? m.index : undefined;
    },
    tokenizer(src) {
      const found = inlineMath(src);
      return found ? { type: 'inlineMath', ...found } : undefined;
    },
    renderer: ({ text, display }) => `<span class="${display ? 'math-display' : 'math-inline'}">${escapeHtml(text)}</span>`,
  },
];

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
  extensions: mathExtensions,
});

// The sanitizer's policy, written once: every element the rendered markdown may
// contain, and the attributes each may keep (`class` only where its rule says).
// Everything else is dropped: other elements (the content of script, style and
// the like with them), other attributes, event handlers, data-* and aria-*.
const ELEMENTS = {
  a: ['href', 'title'],
  img: ['src', 'alt', 'title'],
  ol: ['start'],
  th: ['align'],
  td: ['align'],
  code: ['class'],
  span: ['class'],
  div: ['class'],
  ...Object.fromEntries(
    [
      'b', 'blockquote', 'br', 'caption', 'dd', 'del', 'details', 'dl', 'dt', 'em', 'h1', 'h2', 'h3',
      'h4', 'h5', 'h6', 'hr', 'i', 'ins', 'kbd', 'li', 'mark', 'p', 'pre', 's', 'strong', 'sub',
      'summary', 'sup', 'table', 'tbody', 'tfoot', 'thead', 'tr', 'ul',
    ].map((tag) => [tag, []]),
  ),
};
// Classes are only kept where marked puts them; model-written HTML is
// escaped anyway, but this keeps content from borrowing the app's classes.
// The formula placeholders (math-*) are filled by math.js after sanitizing.
const CLASSES = { code: /^language-[\w+#.-]{1,40}$/, span: /^(?:task-box|math-inline|math-display)$/, div: /^math-display$/ };

const PURIFY_CONFIG = {
  ALLOWED_TAGS: Object.keys(ELEMENTS),
  ALLOWED_ATTR: [...new Set(Object.values(ELEMENTS).flat())],
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  ALLOW_UNKNOWN_PROTOCOLS: false,
  SANITIZE_DOM: true,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook('uponSanitizeAttribute', (node, data) => {
  const tag = node.nodeName.toLowerCase();
  const allowed = Object.hasOwn(ELEMENTS, tag) && ELEMENTS[tag].includes(data.attrName);
  if (!allowed || (data.attrName === 'class' && !CLASSES[tag].test(data.attrValue))) data.keepAttr = false;
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
function renderMarkdown(text, options = {}) {
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
  const live = document.importNode(fragment, true);
  renderMath(live);
  return live;
}

// --- rendering a reply as it streams ---------------------------------------------
//
// A streaming reply is rendered on every animation frame. Rendering all of it
// each time costs the square of its length, so an element keeps the blocks
// that are done (their DOM stays) and renders again only what follows them:
// the last block, which may still be open (a code fence, a list, a table).
// A block is done once the markdown after it, in complete lines, has begun
// another block after it: what comes later can only change the last block.
// When the reply is finished, the result is exactly a full render's.

/** Per element: {done: the text of the finished blocks, blocks: [{text, nodes, plainCode}], tail: nodes}. */
const streams = new WeakMap();

/** The top-level blocks of `text` (no inline parsing: cheap), and its link definitions. */
function blockTokens(text) {
  const lexer = new Lexer(marked.defaults);
  const tokens = lexer.blockTokens(text, []);
  return { tokens, links: lexer.tokens.links };
}

function fragmentFor(text, streaming, decorate) {
  const fragment = renderMarkdown(text, { streaming });
  if (decorate) decorate(fragment);
  return fragment;
}

// A code block without a language is highlighted by guessing, which a
// streaming render skips: such a block is rendered again at the end.
const hasPlainCode = (fragment) =>
  Array.from(fragment.querySelectorAll('pre > code')).some((code) => !/(?:^|\s)language-/.test(code.className));

/** The text of the blocks before the last one, in the complete lines of `rest` ('' if none is done). */
function finishedPrefix(rest) {
  const complete = rest.slice(0, rest.lastIndexOf('\n') + 1);
  if (!complete) return '';
  const { tokens } = blockTokens(complete);
  let last = tokens.length - 1;
  while (last > 0 && tokens[last].type === 'space') last -= 1;
  if (last <= 0) return '';
  const prefix = tokens
    .slice(0, last)
    .map((t) => t.raw)
    .join('');
  return complete.startsWith(prefix) ? prefix : '';
}

/** Does rendering the blocks one by one give what rendering `text` at once gives? */
function blocksAgree(text, stream) {
  const { tokens, links } = blockTokens(text);
  if (Object.keys(links).length > 0) return false; // a later definition can change earlier links
  const boundaries = new Set();
  let at = 0;
  for (const t of tokens) boundaries.add((at += t.raw.length));
  let end = 0;
  return stream.blocks.every((b) => boundaries.has((end += b.text.length)));
}

/**
 * Render markdown into `element`, replacing what it showed. While `streaming`,
 * the finished blocks from the previous call are kept when `text` goes on from
 * them; the final (not streaming) call gives exactly a full render's DOM.
 * `decorate(fragment)` is applied to every rendered piece before it is shown.
 */
export function renderMarkdownInto(element, text, { streaming = false, decorate = null } = {}) {
  text = String(text ?? '').replace(/\r\n|\r/g, '\n'); // as marked reads it: offsets stay exact
  let stream = streams.get(element);
  if (stream && !text.startsWith(stream.done)) stream = null;
  if (!streaming) {
    streams.delete(element);
    if (!stream || stream.blocks.length === 0 || !blocksAgree(text, stream)) {
      element.replaceChildren(fragmentFor(text, false, decorate));
      return;
    }
    for (const block of stream.blocks) {
      if (!block.plainCode) continue;
      const fresh = fragmentFor(block.text, false, decorate);
      block.nodes[0].before(fresh);
      for (const node of block.nodes) node.remove();
    }
    for (const node of stream.tail) node.remove();
    element.append(fragmentFor(text.slice(stream.done.length), false, decorate));
    return;
  }
  if (!stream) {
    stream = { done: '', blocks: [], tail: [] };
    streams.set(element, stream);
    element.replaceChildren();
  }
  for (const node of stream.tail) node.remove();
  const finished = finishedPrefix(text.slice(stream.done.length));
  if (finished) {
    const fragment = fragmentFor(finished, true, decorate);
    const block = { text: finished, nodes: Array.from(fragment.childNodes), plainCode: hasPlainCode(fragment) };
    if (block.nodes.length === 0) block.nodes.push(document.createTextNode(''));
    element.append(...block.nodes);
    stream.blocks.push(block);
    stream.done += finished;
  }
  const tail = fragmentFor(text.slice(stream.done.length), true, decorate);
  stream.tail = Array.from(tail.childNodes);
  element.append(tail);
}
