// JSON over HTTP with the session: the CSRF token, one POST helper, one GET helper.
// Every endpoint answers an error as {"error": code, "message": text} (docs/protocol.md);
// the helpers throw an Error whose message is the text for people and whose
// `code` is the machine's kind.

export function csrfToken() {
  const input = document.querySelector('input[name=csrfmiddlewaretoken]');
  if (input && input.value) return input.value;
  const m = /(?:^|;\s*)csrftoken=([^;]+)/.exec(document.cookie);
  return m ? decodeURIComponent(m[1]) : '';
}

async function answer(response) {
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new Error((data && (data.message || data.error)) || `HTTP ${response.status}`);
    error.code = data && typeof data.error === 'string' ? data.error : null;
    error.status = response.status;
    throw error;
  }
  return data;
}

export async function postJSON(url, body) {
  const response = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRFToken': csrfToken() },
    body: JSON.stringify(body),
  });
  return answer(response);
}

export async function getJSON(url) {
  const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  return answer(response);
}
