// The conversation settings dialog: system prompt, temperature, max tokens, thinking budget.
// Saved through POST /api/conversations/<id>/update/; used by the next reply.
import { postJSON } from './http.js';

const $ = (selector) => document.querySelector(selector);

function numberOrNull(input) {
  const raw = input.value.trim();
  if (raw === '') return null;
  const value = Number(raw);
  return Number.isFinite(value) ? value : NaN;
}

export function initSettings({ getConversation }) {
  const button = $('#settings-button');
  const dialog = $('#settings-dialog');
  const form = $('#settings-form');
  const system = $('#settings-system');
  const temperature = $('#settings-temperature');
  const maxTokens = $('#settings-max-tokens');
  const thinking = $('#settings-thinking-budget');
  const error = $('#settings-error');
  if (!button || !dialog) return { update() {} };

  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  button.addEventListener('click', () => {
    const conv = getConversation();
    if (!conv) return;
    system.value = conv.system_prompt || '';
    temperature.value = conv.temperature ?? '';
    maxTokens.value = conv.max_tokens ?? '';
    if (thinking) thinking.value = conv.thinking_budget ?? '';
    showError('');
    dialog.showModal();
    system.focus();
  });

  form.addEventListener('submit', async (event) => {
    if (event.submitter && event.submitter.value !== 'save') return; // Cancel closes
    event.preventDefault();
    const conv = getConversation();
    if (!conv) return dialog.close();
    const body = {
      system_prompt: system.value,
      temperature: numberOrNull(temperature),
      max_tokens: numberOrNull(maxTokens),
    };
    if (thinking) body.thinking_budget = numberOrNull(thinking);
    if (Number.isNaN(body.temperature) || Number.isNaN(body.max_tokens) || Number.isNaN(body.thinking_budget)) {
      showError('Temperature, max tokens and the thinking budget must be numbers, or empty.');
      return;
    }
    try {
      const answer = await postJSON(`/api/conversations/${conv.id}/update/`, body);
      const saved = answer.conversation || {};
      conv.system_prompt = saved.system_prompt ?? body.system_prompt.trim();
      conv.temperature = saved.temperature ?? body.temperature;
      conv.max_tokens = saved.max_tokens ?? body.max_tokens;
      if (thinking) conv.thinking_budget = saved.thinking_budget ?? body.thinking_budget;
      dialog.close();
    } catch (err) {
      showError(err && err.message ? err.message : 'The settings could not be saved.');
    }
  });

  return {
    update() {
      button.hidden = !getConversation();
    },
  };
}
