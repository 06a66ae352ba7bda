// The Usage dialog of a conversation (its menu's "Usage…"): replies, tokens,
// what the stopped replies used until their stop, and an estimated cost where
// the operator set prices. Read from GET /api/conversations/<id>/usage/;
// server text reaches the DOM through textContent only.

import { getJSON } from './http.js';
import { $, el } from './ui.js';

const STATUS_WORDS = { complete: 'complete', stopped: 'stopped', error: 'failed', interrupted: 'interrupted', streaming: 'streaming' };
const number = new Intl.NumberFormat();

function plural(n, one, many = `${one}s`) {
  return `${number.format(n)} ${n === 1 ? one : many}`;
}

/** "12 replies (10 complete, 2 stopped)". */
export function repliesText(usage) {
  const parts = Object.entries(usage.by_status || {})
    .filter(([, n]) => n > 0)
    .map(([status, n]) => `${number.format(n)} ${STATUS_WORDS[status] || status}`);
  const head = plural(usage.replies, 'reply', 'replies');
  return parts.length > 1 ? `${head} (${parts.join(', ')})` : head;
}

/** An estimated cost as the operator's prices have it: "≈ 0.004120", or why there is none. */
export function costText(cost, unpriced) {
  if (cost === null || cost === undefined) return 'no price set';
  return `≈ ${cost}${unpriced && unpriced.length ? ' (priced models only)' : ''}`;
}

function rows(usage) {
  const list = [
    ['Replies', repliesText(usage)],
    ['Prompt tokens', number.format(usage.prompt_tokens)],
    ['Completion tokens', number.format(usage.completion_tokens)],
    ['Estimated cost', costText(usage.cost, usage.unpriced_models)],
  ];
  if (usage.stopped.replies > 0) {
    list.push(
      ['Stopped replies', number.format(usage.stopped.replies), 'usage-stopped'],
      ['Their tokens until the stop', `${number.format(usage.stopped.prompt_tokens)} prompt · ${number.format(usage.stopped.completion_tokens)} completion`],
    );
    if (usage.stopped.cost !== null) list.push(['Their cost until the stop', `≈ ${usage.stopped.cost}`]);
  }
  return list;
}

function notes(usage) {
  const said = [];
  if (usage.models.length > 1) said.push(`Models: ${usage.models.map((m) => `${m.model} (${plural(m.replies, 'reply', 'replies')})`).join(', ')}.`);
  if (usage.counted_replies > 0) {
    said.push(`${plural(usage.counted_replies, 'reply', 'replies')} had no usage from the model's server; chatsite counted ${usage.counted_replies === 1 ? 'its' : 'their'} tokens itself.`);
  }
  if (usage.cost !== null) said.push('Costs are estimates from the prices this server was given; the provider’s bill is the exact figure.');
  if (usage.unpriced_models.length) said.push(`No price for ${usage.unpriced_models.join(', ')}.`);
  return said.join(' ');
}

export async function showUsage(conv) {
  const dialog = $('#usage-dialog');
  const status = $('#usage-status');
  const totals = $('#usage-totals');
  $('#usage-conversation').textContent = conv.title || 'Untitled';
  $('#usage-notes').textContent = '';
  totals.hidden = true;
  totals.replaceChildren();
  status.textContent = 'Loading…';
  if (!dialog.open) dialog.showModal();
  try {
    const usage = await getJSON(`/api/conversations/${conv.id}/usage/`);
    status.textContent = usage.replies ? '' : 'No replies yet: nothing used.';
    for (const [term, value, className] of rows(usage)) {
      const dt = el('dt', { text: term });
      const dd = el('dd', { text: value });
      if (className) {
        dt.classList.add(className);
        dd.classList.add(className);
      }
      totals.append(dt, dd);
    }
    totals.hidden = !usage.replies;
    $('#usage-notes').textContent = usage.replies ? notes(usage) : '';
  } catch (err) {
    status.textContent = `Could not load the usage: ${err.message}. Close this and try again.`;
  }
}
