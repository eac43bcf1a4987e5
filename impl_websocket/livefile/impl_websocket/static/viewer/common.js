// What both pages share: the token, requests to the HTTP API, statuses and sizes as text.

// The token the page was opened with (`?token=`, as in a reference). Every request for data
// carries it: fetches in the Authorization header, which no access log records; the event
// streams and links in `?token=` (an EventSource and a link cannot set headers), which the
// server's log redacts.
export const token = new URL(location.href).searchParams.get("token");

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

export async function api(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (typeof body.detail === "string") detail = body.detail;
    } catch {
      // not JSON: the status line says enough
    }
    throw new ApiError(response.status, detail);
  }
  return response.json();
}

// A URL of this server for what cannot send headers (links, images, event streams).
export function withToken(path, params = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
  if (token) url.searchParams.set("token", token);
  return url.pathname + url.search;
}

export function humanSize(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

export function isTerminal(status) {
  return status.transferStatus === "COMPLETED" || status.transferStatus === "FAILED";
}

// The badge: the transfer status, and a derived resource's stage and percent while it is made.
export function showBadge(badge, status) {
  let text = status.transferStatus;
  if (status.stage) {
    text += ` · ${status.stage}`;
    if (status.percent !== undefined && status.percent !== null) {
      text += ` ${Math.floor(status.percent)}%`;
    }
  }
  badge.textContent = text;
  badge.className = `badge ${status.transferStatus}`;
}

export function failureText(status) {
  const error = status.error;
  const reason = error ? `${error.message} (${error.code})` : "no reason given";
  return `This resource FAILED: ${reason}. The ${humanSize(status.currentSize)} received before the failure are kept.`;
}

export function showProblem(element, text) {
  element.textContent = text;
  element.hidden = false;
}

// Server-Sent Events of `path`: `handlers[event](data)`; closed by the caller.
export function events(path, handlers) {
  const source = new EventSource(withToken(path));
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
  }
  return source;
}
