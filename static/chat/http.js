// JSON over HTTP with the session: the CSRF token, one POST helper, one GET helper.
// An error answer ({"error": code, "message": text}, docs/protocol.md) becomes a
// thrown Error whose message is the text for people (the code when there is no
// text, else the HTTP status) and whose `code` and `status` stay in the data.

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

/** A multipart upload (a FormData), answered like postJSON. */
export async function postForm(url, form) {
  const response = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { Accept: 'application/json', 'X-CSRFToken': csrfToken() },
    body: form,
  });
  return answer(response);
}
