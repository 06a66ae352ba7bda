// A reply's reasoning ("thinking"), shown apart from its answer: a collapsed
// block, "Thinking… 4 s" with a live timer while the model thinks, "Thought for
// 12 s" afterwards, expandable to the reasoning itself (sanitized markdown, like
// the answer). No page state here: the chat page and any page that shows saved
// messages (message_to_dict's `reasoning`, `reasoning_redacted`,
// `metrics.reasoning_ms`) use the same two functions.

import { renderMarkdownInto } from './markdown.js';

const el = (tag, className, text = null) => {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== null) node.textContent = text;
  return node;
};

/** An empty, hidden reasoning block (fill it with renderReasoning). */
export function reasoningEl() {
  const details = el('details', 'reasoning');
  details.hidden = true;
  const summary = el('summary', 'reasoning-summary');
  summary.append(el('span', 'reasoning-label', 'Thinking…'), el('span', 'reasoning-timer'));
  // The timer's every tick is not for screen readers: the page announces the start and the end.
  summary.lastChild.setAttribute('aria-hidden', 'true');
  details.append(summary, el('div', 'reasoning-body'), el('p', 'reasoning-redacted'));
  details.lastChild.hidden = true;
  return details;
}

const seconds = (ms) => {
  const s = ms / 1000;
  if (s < 10) return `${Math.max(s, 0.1).toFixed(1).replace(/\.0$/, '')} s`;
  if (s < 90) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
};

/** "Thought for 12 s" (or "Thought" when how long is not known). */
export function thoughtForText(ms) {
  return typeof ms === 'number' && Number.isFinite(ms) ? `Thought for ${seconds(ms)}` : 'Thought';
}

const live = new Set(); // blocks whose timer runs
let ticker = 0;

function tick() {
  const now = Date.now();
  for (const details of live) {
    if (!details.isConnected) {
      live.delete(details);
      continue;
    }
    const started = Number(details.dataset.startedAt);
    details.querySelector('.reasoning-timer').textContent = started ? seconds(now - started) : '';
  }
  if (live.size === 0) {
    clearInterval(ticker);
    ticker = 0;
  }
}

/**
 * Show a reply's reasoning in its block (made by reasoningEl).
 * thinking: the model is thinking now (no answer yet, still streaming): the label
 * is "Thinking…" with a timer from startedAt (ms since the epoch); otherwise
 * "Thought for <ms>". streaming: the reasoning text may still grow.
 */
export function renderReasoning(details, { text = '', redacted = false, thinking = false, streaming = false, ms = null, startedAt = null }) {
  const has = Boolean(text) || redacted;
  details.hidden = !has;
  if (!has) {
    live.delete(details);
    return;
  }
  details.dataset.state = thinking ? 'thinking' : 'done';
  const label = details.querySelector('.reasoning-label');
  const timer = details.querySelector('.reasoning-timer');
  if (thinking) {
    label.textContent = 'Thinking…';
    if (startedAt && !details.dataset.startedAt) details.dataset.startedAt = String(startedAt);
    live.add(details);
    if (!ticker) ticker = setInterval(tick, 1000);
    tick();
  } else {
    live.delete(details);
    label.textContent = thoughtForText(ms);
    timer.textContent = '';
  }
  const body = details.querySelector('.reasoning-body');
  if (body.chatsiteText !== text) {
    body.chatsiteText = text;
    renderMarkdownInto(body, text, { streaming });
  } else if (!streaming) {
    renderMarkdownInto(body, text);
  }
  const note = details.querySelector('.reasoning-redacted');
  note.textContent = text ? 'Part of the reasoning was hidden by the provider.' : 'The reasoning was hidden by the provider.';
  note.hidden = !redacted;
}
