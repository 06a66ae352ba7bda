// Compare: one message answered by two to four models at once (docs/protocol.md,
// "Compare"). The composer's picker chooses the models; the replies stream side
// by side in columns, each with its model, its own Stop, status and metrics,
// plus "Stop all". On a phone (≤ 640px) the columns are tabs. Each column's
// reply is an ordinary assistant message node (ui.js), so its text goes through
// the sanitizer like any reply's. When every column has ended, "Continue with
// this one" makes a column the conversation's shown branch.

import { postJSON } from './http.js';
import { send } from './socket.js';
import { stopFrame } from './protocol.js';
import { announce, dom, followColumn, showError, showMessages, updateControls } from './render.js';
import { isCurrent, modelLabel, state } from './state.js';
import { $, el } from './ui.js';

export const COMPARE_MIN = 2;
export const COMPARE_MAX = 4;

const STATUS_WORDS = {
  streaming: 'Streaming',
  complete: 'Done',
  stopped: 'Stopped',
  interrupted: 'Interrupted',
  error: 'Failed',
};

// --- the picker (composer) ----------------------------------------------------

const picked = new Set();

/** The models to compare (2–4 ids, in the picker's order), or null: a plain send. */
export function compareModels() {
  const ids = state.models.map((m) => m.id).filter((id) => picked.has(id));
  return ids.length >= COMPARE_MIN ? ids.slice(0, COMPARE_MAX) : null;
}

function renderPicker() {
  const list = $('#compare-models');
  for (const id of [...picked]) if (!state.models.some((m) => m.id === id)) picked.delete(id);
  list.replaceChildren(
    ...state.models.map((m, i) => {
      const box = el('input', {
        type: 'checkbox',
        id: `compare-model-${i}`,
        value: m.id,
        checked: picked.has(m.id),
        disabled: !picked.has(m.id) && picked.size >= COMPARE_MAX,
      });
      box.addEventListener('change', () => {
        if (box.checked) picked.add(m.id);
        else picked.delete(m.id);
        renderPicker();
      });
      return el('li', {}, [box, el('label', { for: box.id, text: m.label || m.id })]);
    }),
  );
  const n = compareModels() ? compareModels().length : 0;
  const toggle = $('#compare-toggle');
  // With fewer than two models there is nothing to compare: no toggle, no picker.
  const comparable = state.models.length >= COMPARE_MIN;
  toggle.hidden = !comparable;
  if (!comparable && !$('#compare-picker').hidden) setPickerOpen(false);
  toggle.dataset.on = n ? 'true' : 'false';
  toggle.querySelector('.compare-toggle-text').textContent = n ? `Compare ${n}` : 'Compare';
  $('#compare-note').textContent = n
    ? `Your next message goes to ${n} models at once.`
    : `Pick ${COMPARE_MIN} to ${COMPARE_MAX} models to send your next message to all of them.`;
  dom.model.disabled = n > 0 || state.models.length === 0;
}

function setPickerOpen(open) {
  const toggle = $('#compare-toggle');
  $('#compare-picker').hidden = !open;
  toggle.setAttribute('aria-expanded', String(open));
  if (open) renderPicker();
}

/** After a compare is sent the picker closes; its choice stays for the next one. */
export function comparePickerClose() {
  setPickerOpen(false);
}

export function initCompare() {
  const toggle = $('#compare-toggle');
  toggle.addEventListener('click', () => setPickerOpen($('#compare-picker').hidden));
  $('#compare-clear').addEventListener('click', () => {
    picked.clear();
    renderPicker();
  });
  $('#compare-picker').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      setPickerOpen(false);
      toggle.focus();
    }
  });
  document.addEventListener('chatsite:models', renderPicker);
  dom.messages.addEventListener('click', onClick);
  dom.messages.addEventListener('keydown', onTabKey);
  renderPicker();
}

// --- the columns (message list) ------------------------------------------------

let groups = 0;

function groupEl() {
  groups += 1;
  const group = el('section', { className: 'compare', 'aria-label': 'Compared replies', dataset: { group: String(groups) } }, [
    el('div', { className: 'compare-bar' }, [
      el('div', { className: 'compare-tabs', role: 'tablist', 'aria-label': 'Compared models' }),
      el('button', { type: 'button', className: 'ghost-button compare-stop-all', text: 'Stop all', title: 'Stop all (Esc)' }),
    ]),
    el('div', { className: 'compare-columns' }),
  ]);
  return group;
}

function columnEl(group, node) {
  const id = node.dataset.id;
  const label = modelLabel(null, node.dataset.model) || node.dataset.model || 'Model';
  const n = group.querySelectorAll('.compare-column').length;
  const panelId = `compare-${group.dataset.group}-${n}`;
  const tab = el('button', {
    type: 'button',
    role: 'tab',
    className: 'compare-tab',
    id: `${panelId}-tab`,
    'aria-controls': panelId,
    'aria-selected': 'false',
    tabindex: '-1',
    title: label,
    dataset: { reply: id },
  }, [el('span', { className: 'compare-tab-model', text: label }), el('span', { className: 'compare-tab-status' })]);
  const column = el('div', { className: 'compare-column', role: 'tabpanel', id: panelId, 'aria-labelledby': `${panelId}-tab`, dataset: { reply: id } }, [
    el('header', { className: 'compare-head' }, [
      el('span', { className: 'compare-model', text: label }),
      el('span', { className: 'compare-status', role: 'status' }),
      el('button', { type: 'button', className: 'ghost-button compare-stop', text: 'Stop', 'aria-label': `Stop ${label}` }),
      el('button', { type: 'button', className: 'ghost-button compare-choose', text: 'Continue with this one', hidden: true }),
    ]),
    node,
  ]);
  group.querySelector('.compare-tabs').append(tab);
  group.querySelector('.compare-columns').append(column);
  // The column's box follows its stream until the reader scrolls it up, and again
  // once they scroll back to its end (render.js followColumn).
  node.addEventListener(
    'scroll',
    () => {
      node.dataset.follow = node.scrollHeight - node.scrollTop - node.clientHeight < 24 ? 'on' : 'off';
    },
    { passive: true },
  );
  return column;
}

/** Columns for the replies of a compare just acknowledged (nodes: their assistant messages, in column order). */
export function compareShow(nodes) {
  const group = groupEl();
  for (const node of nodes) columnEl(group, node);
  dom.messages.append(group);
  state.compare = { group };
  selectTab(group, 0);
  compareUpdate();
  return group;
}

/**
 * A reply of the shown conversation started that the page has no node for,
 * while `sibling` (a node on the page) is one of its versions (a reload or a
 * second tab during a compare): both become columns. False if `sibling` is not
 * one of its versions.
 */
export function compareAdopt(node, sibling) {
  const versions = sibling && sibling.chatsiteVersions;
  if (!Array.isArray(versions) || !versions.includes(node.dataset.id)) return false;
  let group = sibling.closest('.compare');
  if (!group) {
    group = groupEl();
    sibling.replaceWith(group);
    columnEl(group, sibling);
    state.compare = { group };
  }
  columnEl(group, node);
  // Column order is the versions' order (the order of the compare's models).
  const columns = [...group.querySelectorAll('.compare-column')];
  const order = (c) => versions.indexOf(c.dataset.reply);
  columns.sort((a, b) => order(a) - order(b));
  const tabs = group.querySelector('.compare-tabs');
  for (const c of columns) {
    group.querySelector('.compare-columns').append(c);
    tabs.append(group.querySelector(`.compare-tab[data-reply="${c.dataset.reply}"]`));
  }
  selectTab(group, 0);
  compareUpdate();
  return true;
}

/** The live columns' reply ids (the page stops or resumes each). */
export function compareLive() {
  const group = state.compare && state.compare.group;
  if (!group || !group.isConnected) return [];
  return [...group.querySelectorAll('.compare-column')]
    .map((c) => c.dataset.reply)
    .filter((id) => {
      const r = state.replies.get(id);
      return r && !r.finished;
    });
}

/** Where each column resumes (`subscribe`'s `after`), or null when no compare is shown. */
export function compareResumePoints() {
  const group = state.compare && state.compare.group;
  if (!group || !group.isConnected) return null;
  const after = {};
  for (const c of group.querySelectorAll('.compare-column')) {
    const r = state.replies.get(c.dataset.reply);
    if (r) after[c.dataset.reply] = r.seq;
  }
  return after;
}

/** Show each column's status, its Stop, and (once all ended) its "Continue with this one". */
export function compareUpdate() {
  const group = state.compare && state.compare.group;
  if (!group || !group.isConnected) return;
  const columns = [...group.querySelectorAll('.compare-column')];
  const ended = columns.every((c) => (state.replies.get(c.dataset.reply) || { finished: true }).finished);
  const leaf = state.compare.chosen || (columns[0] && columns[0].dataset.reply);
  for (const c of columns) {
    const id = c.dataset.reply;
    const r = state.replies.get(id);
    const status = r && !r.finished ? 'streaming' : (c.querySelector('.message').dataset.status || 'complete');
    const words = STATUS_WORDS[status] || status;
    c.dataset.status = status;
    c.querySelector('.compare-status').textContent = words;
    const tab = group.querySelector(`.compare-tab[data-reply="${id}"]`);
    tab.querySelector('.compare-tab-status').textContent = words;
    tab.dataset.status = status;
    const stop = c.querySelector('.compare-stop');
    stop.hidden = status !== 'streaming';
    stop.disabled = Boolean(state.compare.stopping && state.compare.stopping.has(id));
    const choose = c.querySelector('.compare-choose');
    choose.hidden = !ended;
    const here = id === leaf;
    choose.setAttribute('aria-pressed', String(here));
    choose.textContent = here ? 'Continuing with this one' : 'Continue with this one';
    followColumn(c.querySelector('.message')); // its end (metrics, status) in view
  }
  group.querySelector('.compare-stop-all').hidden = ended;
  group.dataset.ended = String(ended);
}

/** Stop every live column ("Stop all", Esc). */
export function compareStopAll() {
  for (const id of compareLive()) stopColumn(id);
}

function stopColumn(id) {
  if (!state.compare) return;
  state.compare.stopping = state.compare.stopping || new Set();
  state.compare.stopping.add(id);
  send(stopFrame({ reply: id }));
  compareUpdate();
  updateControls();
}

async function choose(id) {
  const conv = state.conversation;
  if (!conv || compareLive().length) return;
  try {
    const body = await postJSON(`/api/conversations/${conv.id}/branch/`, { message: id });
    if (!isCurrent(conv.id)) return;
    if (state.compare) state.compare.chosen = id;
    compareUpdate();
    announce('The next message continues from this reply');
    // The shown branch is the server's now; its versions appear under the reply.
    state.compareChosen = body.messages || [];
  } catch (err) {
    showError(`Could not continue with that reply: ${err.message}`);
  }
}

/** The compare's columns become the shown branch (the next send, or a reload, shows it). */
export function compareSettle() {
  if (state.compareChosen) {
    const messages = state.compareChosen;
    state.compareChosen = null;
    showMessages(messages);
  }
  state.compare = null;
}

function selectTab(group, index) {
  const tabs = [...group.querySelectorAll('.compare-tab')];
  const columns = [...group.querySelectorAll('.compare-column')];
  tabs.forEach((tab, i) => {
    tab.setAttribute('aria-selected', String(i === index));
    tab.tabIndex = i === index ? 0 : -1;
    columns[i].dataset.selected = String(i === index);
  });
}

function onClick(event) {
  const button = event.target.closest('button');
  if (!button || !button.closest('.compare')) return;
  const group = button.closest('.compare');
  const column = button.closest('.compare-column');
  if (button.classList.contains('compare-stop-all')) compareStopAll();
  else if (button.classList.contains('compare-stop') && column) stopColumn(column.dataset.reply);
  else if (button.classList.contains('compare-choose') && column) choose(column.dataset.reply);
  else if (button.classList.contains('compare-tab')) {
    selectTab(group, [...group.querySelectorAll('.compare-tab')].indexOf(button));
  }
}

function onTabKey(event) {
  const tab = event.target.closest && event.target.closest('.compare-tab');
  if (!tab || !['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(event.key)) return;
  const group = tab.closest('.compare');
  const tabs = [...group.querySelectorAll('.compare-tab')];
  let i = tabs.indexOf(tab);
  if (event.key === 'ArrowLeft') i = (i - 1 + tabs.length) % tabs.length;
  else if (event.key === 'ArrowRight') i = (i + 1) % tabs.length;
  else if (event.key === 'Home') i = 0;
  else i = tabs.length - 1;
  event.preventDefault();
  selectTab(group, i);
  tabs[i].focus();
}
