// The model picker. The page brings the server's last good model lists;
// /api/models/ is asked again while a provider has not been listed yet, and
// when the tab comes back. A model whose provider is unreachable stays
// selectable, marked with since when.

import { updateVisionNote } from './attachments.js';
import { getJSON } from './http.js';
import { clearError, dom, showError, updateControls } from './render.js';
import { state } from './state.js';
import { $, el } from './ui.js';

const models = {
  providers: {},
  default: null,
  picked: null, // the id the user chose in the picker
  polls: 0,
  timer: null,
  deferred: false, // asked while the server was unreachable: ask once the socket is back
};

const providerOf = (id) => id.slice(0, Math.max(0, id.indexOf('/')));

function sinceText(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return '';
  const today = when.toDateString() === new Date().toDateString();
  const options = today ? { hour: '2-digit', minute: '2-digit' } : { dateStyle: 'medium', timeStyle: 'short' };
  return when.toLocaleString([], options);
}

function providerProblem(id) {
  const name = providerOf(id);
  const p = models.providers[name];
  if (!p || p.reachable !== false) return null;
  const since = p.unreachable_since ? ` since ${sinceText(p.unreachable_since)}` : '';
  return `${p.label || name} unreachable${since}`;
}

function modelHint() {
  const select = dom.model;
  const m = state.models.find((x) => x.id === select.value);
  const problem = m ? providerProblem(m.id) : null;
  const detail = problem ? models.providers[providerOf(m.id)].error : null;
  const text = [problem && `${problem}${detail ? `: ${detail}` : ''}.`, m && m.description].filter(Boolean).join(' ');
  select.title = text;
  select.dataset.unreachable = problem ? 'true' : 'false';
  $('#model-hint').textContent = text;
}

function renderModels() {
  const select = dom.model;
  if (state.models.length === 0) {
    const pending = Object.values(models.providers).some((p) => p.reachable === null);
    select.replaceChildren(el('option', { value: '', text: pending ? 'Loading models…' : 'No models available' }));
    select.disabled = true;
    if (!pending) showError('No model is configured on this server.');
    updateControls();
    return;
  }
  select.disabled = false;
  select.replaceChildren(
    ...state.models.map((m) => {
      const problem = providerProblem(m.id);
      return el('option', {
        value: m.id,
        title: m.description || null,
        text: `${m.label || m.id}${m.vision ? ' · sees images' : ''}${problem ? ` (${problem})` : ''}`,
        dataset: { ...(problem ? { unreachable: 'true' } : {}), ...(m.vision ? { vision: 'true' } : {}) },
      });
    }),
  );
  const ids = state.models.map((m) => m.id);
  const wanted = [models.picked, state.conversation && state.conversation.model, models.default, ids[0]];
  select.value = wanted.find((id) => id && ids.includes(id));
  modelHint();
  updateVisionNote();
  updateControls();
  document.dispatchEvent(new CustomEvent('chatsite:models')); // the compare picker lists them too
}

/** Ask the server for its model lists again (now, or once the socket is open). */
export async function modelsRefresh() {
  clearTimeout(models.timer);
  if (document.body.dataset.socket !== 'open') {
    // The server can't be reached right now: ask once the socket is back (socketOpened).
    models.deferred = true;
    return;
  }
  models.deferred = false;
  try {
    const body = await getJSON('/api/models/');
    const hadNone = state.models.length === 0;
    state.models = Array.isArray(body.models) ? body.models : [];
    models.providers = body.providers || {};
    models.default = body.default || null;
    renderModels();
    if (hadNone && state.models.length > 0) clearError();
  } catch {
    // Keep what the picker shows; the next poll or visit asks again. A request
    // the server's end cut off (its socket had not closed yet, so the check above
    // let it through) is asked again once the socket is back (socketOpened).
  }
  pollModelsWhilePending();
}

/** True when a refresh was put off until the socket is back. */
export const modelsDeferred = () => models.deferred;

function pollModelsWhilePending() {
  const pending = Object.values(models.providers).some((p) => p.reachable === null);
  if (pending && models.polls < 30) {
    models.polls += 1;
    models.timer = setTimeout(modelsRefresh, 1000);
  }
}

export function initModels({ data }) {
  models.providers = data.model_providers || {};
  models.default = data.default_model || null;
  dom.model.addEventListener('change', () => {
    models.picked = dom.model.value;
    modelHint();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') modelsRefresh();
  });
  renderModels();
  pollModelsWhilePending();
}
