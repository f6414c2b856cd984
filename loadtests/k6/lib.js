// Shared target handling for Strait's k6 scripts.
//
// BASE_URL  where to connect, e.g. http://127.0.0.1:8080 or https://app.example.com
// HOST      the Host (and TLS SNI) to send when BASE_URL names an address instead,
//           e.g. app.example.com: requests go to https://HOST:port with HOST resolved
//           to BASE_URL's address (like curl --resolve)
// INSECURE  "true" to skip TLS certificate verification (self-signed demo certificate)
// TOKEN     a bearer token to send (jwt.js requires it)

const base = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const match = base.match(/^(https?):\/\/([^/:]+|\[[^\]]+\])(?::(\d+))?(\/.*)?$/);
if (!match) {
  throw new Error(`BASE_URL ${base} is not a URL like http://host:port`);
}
const [, scheme, address, port, prefix] = match;
const host = __ENV.HOST || address;

/** The URL for a path, with HOST in place of the address when given. */
export function url(path) {
  return `${scheme}://${host}${port ? `:${port}` : ''}${prefix || ''}${path}`;
}

/** Options every script shares: name resolution for HOST, TLS verification. */
export function baseOptions() {
  const o = { insecureSkipTLSVerify: __ENV.INSECURE === 'true' };
  if (host !== address) {
    o.hosts = { [host]: address.replace(/^\[|\]$/g, '') };
  }
  return o;
}

/** Request parameters with the bearer token (if any) and extra headers. */
export function params(headers = {}) {
  const h = Object.assign({}, headers);
  if (__ENV.TOKEN) {
    h.Authorization = `Bearer ${__ENV.TOKEN}`;
  }
  return { headers: h };
}

/** The echo backend's name in a response, or undefined. */
export function backendName(res) {
  try {
    return res.json('name');
  } catch (e) {
    return undefined;
  }
}

/** A number from the environment, or the default. */
export function num(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === '' ? fallback : Number(v);
}
