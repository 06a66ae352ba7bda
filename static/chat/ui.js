// DOM helpers for the chat page. Model text only ever reaches the DOM through
// textContent or through markdown.js's sanitized fragments (renderMarkdownInto).

import { renderMarkdownInto } from './markdown.js';
import { reasoningEl, renderReasoning } from './reasoning.js';

export const $ = (selector, root = document) => root.querySelector(selector);

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'className') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- formatting -------------------------------------------------------------

export function formatDuration(ms) {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${m} min ${s} s`;
}

const num = (v) => typeof v === 'number' && Number.isFinite(v);

/** "84 ms to first token · 71.5 tok/s · 52 tokens" (parts missing are left out); a reply
 * that reasoned adds "· 3.20 s to first answer token" after the first token. */
export function metricsText(metrics, usage) {
  const parts = [];
  if (metrics && num(metrics.ttft_ms)) parts.push(`${formatDuration(metrics.ttft_ms)} to first token`);
  if (metrics && num(metrics.reasoning_ms) && num(metrics.first_answer_ms)) {
    parts.push(`${formatDuration(metrics.first_answer_ms)} to first answer token`);
  }
  if (metrics && num(metrics.tokens_per_s) && metrics.tokens_per_s > 0) {
    parts.push(`${metrics.tokens_per_s.toFixed(1)} tok/s`);
  }
  if (usage && num(usage.completion_tokens) && usage.completion_tokens > 0) {
    const n = usage.completion_tokens;
    parts.push(`${usage.counted ? '≈' : ''}${n} token${n === 1 ? '' : 's'}`);
  }
  return parts.join(' · ');
}

function metricsTitle(metrics, usage, model) {
  const lines = [];
  if (model) lines.push(`Model: ${model}`);
  if (metrics && num(metrics.total_ms)) lines.push(`Total time: ${formatDuration(metrics.total_ms)}`);
  if (usage && num(usage.prompt_tokens)) lines.push(`Prompt tokens: ${usage.prompt_tokens}`);
  if (usage && usage.counted) lines.push('Token counts estimated by chatsite');
  return lines.join('\n');
}

// The short badge of each error kind, as the server words it (conversations/errors.py).
let errorLabels = {};

export function setErrorLabels(labels) {
  errorLabels = labels && typeof labels === 'object' ? labels : {};
}

export function badgeText(status, errorKind) {
  if (status === 'stopped') return 'Stopped';
  if (status === 'interrupted') return 'Interrupted';
  if (status === 'error') return errorLabels[errorKind] || errorLabels.internal || null;
  return null;
}

// --- time on the page -------------------------------------------------------

const DAY_MS = 86_400_000;
const startOfDay = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();

// Formatters are made once: a long conversation formats thousands of times.
const formats = {
  weekday: new Intl.DateTimeFormat(undefined, { weekday: 'long' }),
  dayMonth: new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' }),
  dayMonthYear: new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' }),
  exact: new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' }),
};

/** "just now", "3 min ago", "2 h ago", "yesterday", "Monday", "12 Mar", "12 Mar 2023". */
export function relativeTime(when, now = new Date()) {
  const seconds = (now.getTime() - when.getTime()) / 1000;
  if (seconds < 45) return 'just now';
  if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min ago`;
  const days = Math.round((startOfDay(now) - startOfDay(when)) / DAY_MS);
  if (days <= 0) return `${Math.floor(seconds / 3600)} h ago`;
  if (days === 1) return 'yesterday';
  if (days < 7) return formats.weekday.format(when);
  return (when.getFullYear() === now.getFullYear() ? formats.dayMonth : formats.dayMonthYear).format(when);
}

/** A <time> with the moment in words, the exact time on hover; kept up to date by refreshTimes. */
export function timeEl(iso, className = 'when') {
  const node = el('time', { className });
  setTime(node, iso);
  return node;
}

export function setTime(node, iso) {
  const when = iso ? new Date(iso) : null;
  if (!when || Number.isNaN(when.getTime())) {
    node.hidden = true;
    return;
  }
  node.hidden = false;
  node.dateTime = when.toISOString();
  node.title = formats.exact.format(when);
  node.textContent = relativeTime(when);
}

/** Rewrite every relative time on the page (as time passes). */
export function refreshTimes(root = document) {
  const now = new Date();
  for (const node of root.querySelectorAll('time[datetime]')) {
    const text = relativeTime(new Date(node.dateTime), now);
    if (node.textContent !== text) node.textContent = text;
  }
}

/** A new conversation's title until the server's arrives: the server's own rule
 * (``title_auto`` in conversations/services/conversations.py): the text's words on
 * one line, at most 60 characters (counted as code points, as Python does). */
export function autoTitle(text) {
  const line = String(text).split(/\s+/).filter(Boolean).join(' ');
  if (!line) return 'New chat';
  const chars = Array.from(line);
  return chars.length <= 60 ? line : `${chars.slice(0, 59).join('').trimEnd()}…`;
}

// --- messages ---------------------------------------------------------------

/** A user message: plain text, newlines kept by CSS. */
// --- attachments ------------------------------------------------------------------

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${(n / (1024 * 1024)).toFixed(n < 10 * 1024 * 1024 ? 1 : 0)} MB`;
}

function fileLabel(a) {
  const ext = /\.([A-Za-z0-9]{1,8})$/.exec(a.name || '');
  if (a.kind === 'pdf') return a.pages ? `PDF · ${a.pages} page${a.pages === 1 ? '' : 's'}` : 'PDF';
  return ext ? ext[1].toUpperCase() : 'Text';
}

/** One attachment as a message (or the composer) shows it: a thumbnail for an
 * image, a chip (name, type, size) for a file. The bytes are the server's, for their owner. */
export function attachmentChipEl(a) {
  if (a.kind === 'image') {
    const img = el('img', { src: a.url, alt: a.name, loading: 'lazy', decoding: 'async', width: a.width || null, height: a.height || null });
    return el('a', { className: 'attachment-chip image-chip', href: a.url, target: '_blank', rel: 'noopener', title: a.name, dataset: { kind: 'image', id: a.id } }, [img]);
  }
  const detail = a.kind === 'pdf' && a.text_chars === 0 ? `${fileLabel(a)} · no text` : `${fileLabel(a)} · ${formatBytes(a.size)}`;
  return el('a', { className: 'attachment-chip file-chip', href: a.url, download: a.name, title: `${a.name} (${detail})`, dataset: { kind: a.kind, id: a.id } }, [
    el('span', { className: 'file-icon', 'aria-hidden': 'true', dataset: { kind: a.kind } }),
    el('span', { className: 'file-text' }, [el('span', { className: 'file-name', text: a.name }), el('span', { className: 'file-detail', text: detail })]),
  ]);
}

export function attachmentListEl(attachments) {
  if (!attachments || attachments.length === 0) return null;
  return el('div', { className: 'message-attachments', role: 'list', 'aria-label': 'Attached files' }, attachments.map((a) => {
    const chip = attachmentChipEl(a);
    chip.setAttribute('role', 'listitem');
    return chip;
  }));
}

export function userMessageEl({ id = null, text, status = 'stored', clientId = null, createdAt = null, attachments = [] }) {
  const body = el('div', { className: 'message-body', text });
  const node = el('article', { className: 'message message-user', 'aria-label': 'You' }, [
    attachmentListEl(attachments),
    el('div', { className: 'bubble', hidden: !text }, [body]),
    el('p', { className: 'message-note', hidden: true }),
    el('div', { className: 'message-footer message-actions' }, [
      el('span', { className: 'versions-slot' }),
      // The label is drawn by CSS, so the message's text stays exactly what the user wrote.
      el('button', { type: 'button', className: 'text-button edit-message', 'aria-label': 'Edit this message', title: 'Edit' }),
      el('button', {
        type: 'button',
        className: 'icon-button copy-message',
        'aria-label': 'Copy message',
        title: 'Copy message',
      }),
      // Last, under the bubble's edge: the actions before it appear on hover.
      timeEl(createdAt || new Date().toISOString()),
    ]),
  ]);
  node.dataset.role = 'user';
  if (id) setMessageId(node, id);
  if (clientId) node.dataset.clientId = clientId;
  node.dataset.status = status;
  node.chatsiteText = text;
  node.chatsiteAttachments = attachments || [];
  return node;
}

/** Give a message element its id (data-id, and id="m-<id>" for links to it). */
export function setMessageId(node, id) {
  node.dataset.id = id;
  node.id = `m-${id}`;
}

/** The "‹ 2/3 ›" switcher between the versions of a message (none for one version). */
export function setVersions(node, versions) {
  const slot = node.querySelector('.versions-slot');
  const list = Array.isArray(versions) ? versions : [];
  node.chatsiteVersions = list;
  const index = list.indexOf(node.dataset.id);
  if (list.length < 2 || index === -1) {
    slot.replaceChildren();
    return;
  }
  const who = node.dataset.role === 'user' ? 'message' : 'reply';
  const prev = el('button', {
    type: 'button',
    className: 'icon-button version-button version-prev',
    'aria-label': `Previous version of this ${who}`,
    title: 'Previous version',
    disabled: index === 0,
    text: '‹',
  });
  const next = el('button', {
    type: 'button',
    className: 'icon-button version-button version-next',
    'aria-label': `Next version of this ${who}`,
    title: 'Next version',
    disabled: index === list.length - 1,
    text: '›',
  });
  if (index > 0) prev.dataset.target = list[index - 1];
  if (index < list.length - 1) next.dataset.target = list[index + 1];
  slot.replaceChildren(
    el('span', { className: 'versions', role: 'group', 'aria-label': `Version ${index + 1} of ${list.length}` }, [
      prev,
      el('span', { className: 'version-label', text: `${index + 1}/${list.length}` }),
      next,
    ]),
  );
}

export function setUserStatus(node, status, note = '') {
  node.dataset.status = status;
  const noteEl = node.querySelector('.message-note');
  noteEl.textContent = note;
  noteEl.hidden = !note;
}

/** An assistant message shell; fill it with renderAssistant / finishAssistant. */
export function assistantMessageEl({ id = null, status = 'streaming', model = null, createdAt = null }) {
  const node = el('article', { className: 'message message-assistant', 'aria-label': 'Assistant' }, [
    reasoningEl(),
    // "Waiting for the model: 2 ahead" while the reply waits its turn (reply_queued).
    el('p', { className: 'queue-place', role: 'status', 'aria-live': 'polite', hidden: true }),
    el('div', { className: 'message-body' }),
    el('div', { className: 'message-footer' }, [
      el('span', { className: 'versions-slot' }),
      timeEl(createdAt || new Date().toISOString()),
      el('span', { className: 'badge', hidden: true }),
      el('span', { className: 'metrics', hidden: true }),
      el('button', {
        type: 'button',
        className: 'icon-button copy-message',
        'aria-label': 'Copy reply as markdown',
        title: 'Copy reply as markdown',
        hidden: true,
      }),
      el('button', { type: 'button', className: 'text-button regenerate-reply', text: 'Regenerate', hidden: true }),
      el('button', { type: 'button', className: 'text-button continue-reply', text: 'Continue', hidden: true }),
    ]),
    el('p', { className: 'message-error', hidden: true }),
    el('p', { className: 'context-note', hidden: true }),
  ]);
  node.dataset.role = 'assistant';
  if (id) setMessageId(node, id);
  node.dataset.status = status;
  if (model) node.dataset.model = model;
  node.chatsiteText = '';
  if (status === 'streaming') node.setAttribute('aria-busy', 'true');
  return node;
}

/** Show a waiting reply's place in the model's queue; position 0 (its request
 * went out) or null (it ended) takes the line away. */
export function showQueuePlace(node, position, ahead = 0) {
  const line = node.querySelector('.queue-place');
  if (!line) return;
  const waiting = Number.isInteger(position) && position > 0;
  line.hidden = !waiting;
  node.classList.toggle('message-queued', waiting);
  line.textContent = waiting ? `Waiting for the model: ${ahead} ahead` : '';
}

/** (Re)render the markdown body of an assistant message. */
export function renderAssistant(node, text, { streaming = false } = {}) {
  node.chatsiteText = text;
  // While it streams, only the reply's last block is rendered again (markdown.js).
  renderMarkdownInto(node.querySelector('.message-body'), text, { streaming, decorate: addCodeCopyButtons });
}

/**
 * (Re)render an assistant message's reasoning block from a reply's state
 * (state.js: reasoning, redacted, thinkingSince, thinkingMs), or a saved
 * message's `reasoning`, `reasoning_redacted` and `metrics.reasoning_ms`.
 */
export function renderAssistantReasoning(node, { text, redacted, streaming = false, thinking = false, ms = null, startedAt = null }) {
  renderReasoning(node.querySelector('.reasoning'), { text, redacted, streaming, thinking, ms, startedAt });
}

/** "3 earlier messages were not sent to the model: they don't fit its 2,048-token window" (or ''). */
export function contextNoteText(omitted, contextTokens) {
  if (!num(omitted) || omitted < 1) return '';
  const what = omitted === 1 ? '1 earlier message was' : `${omitted} earlier messages were`;
  const window = num(contextTokens) ? `its ${contextTokens.toLocaleString('en-US')}-token window` : 'its window';
  return `${what} not sent to the model: they don't fit ${window}`;
}

/** Show the terminal state: badge, error text, metrics, and what was left out of the prompt. */
export function finishAssistant(
  node,
  {
    status,
    error_kind = null,
    error = null,
    metrics = null,
    usage = null,
    model = null,
    segments = null,
    omitted_messages = 0,
    context_tokens = null,
  },
) {
  node.dataset.status = status;
  node.removeAttribute('aria-busy');
  const badge = node.querySelector('.badge');
  const label = badgeText(status, error_kind);
  badge.textContent = label || '';
  badge.hidden = !label;
  badge.dataset.kind = status;
  // The machine's name for what went wrong stays in the data, and on hover.
  if (status === 'error' && error_kind) {
    badge.dataset.errorKind = error_kind;
    badge.title = `Error kind: ${error_kind}`;
  } else {
    delete badge.dataset.errorKind;
    badge.removeAttribute('title');
  }

  const errorEl = node.querySelector('.message-error');
  const errText = status === 'error' ? error || '' : '';
  errorEl.textContent = errText;
  errorEl.hidden = !errText;

  const noteEl = node.querySelector('.context-note');
  const note = contextNoteText(omitted_messages, context_tokens);
  noteEl.textContent = note;
  noteEl.hidden = !note;

  const metricsEl = node.querySelector('.metrics');
  let text = metricsText(metrics, usage);
  if (Array.isArray(segments) && segments.length > 0) {
    // A continued reply: the metrics of every part, earlier parts first.
    const parts = segments.map((seg) =>
      metricsText(
        { ttft_ms: seg.ttft_ms, tokens_per_s: seg.tokens_per_s },
        { completion_tokens: seg.completion_tokens, counted: false },
      ),
    );
    parts.push(text);
    text = parts.map((t, i) => `Part ${i + 1}: ${t || '–'}`).join(' | ');
  }
  metricsEl.textContent = text;
  metricsEl.hidden = !text;
  const title = metricsTitle(metrics, usage, model || node.dataset.model);
  if (title) metricsEl.title = title;
  else metricsEl.removeAttribute('title');

  node.querySelector('.copy-message').hidden = !node.chatsiteText;
}

/** A reply going back to streaming (continue): clear its terminal state. */
export function reopenAssistant(node) {
  node.dataset.status = 'streaming';
  node.setAttribute('aria-busy', 'true');
  for (const sel of ['.badge', '.message-error']) node.querySelector(sel).hidden = true;
}

function addCodeCopyButtons(body) {
  for (const pre of body.querySelectorAll('pre')) {
    if (pre.parentElement && pre.parentElement.classList.contains('code-block')) continue;
    const code = pre.querySelector('code');
    const m = code && /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
    const wrap = el('div', { className: 'code-block' });
    // The language label is drawn by CSS from data-lang, so the body's
    // textContent stays exactly the rendered reply.
    const head = el('div', { className: 'code-head' }, [
      el('button', { type: 'button', className: 'copy-code', 'aria-label': 'Copy code', title: 'Copy code' }),
    ]);
    head.dataset.lang = m ? m[1] : 'text';
    pre.replaceWith(wrap);
    wrap.append(head, pre);
  }
}

function copyFallback(text) {
  const area = el('textarea', { className: 'clipboard-helper', readonly: true, 'aria-hidden': 'true' });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  area.remove();
  return ok;
}

export async function copyText(text, button) {
  let ok = false;
  try {
    if (!navigator.clipboard) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    ok = copyFallback(text);
  }
  if (ok) {
    button.dataset.copied = 'true';
    setTimeout(() => delete button.dataset.copied, 1500);
  }
  return ok;
}
