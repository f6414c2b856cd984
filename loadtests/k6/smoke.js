// Smoke test of the app.example.com example: a few requests per route, with checks
// on status and on which backend answered. Any failed check fails the run.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e HOST=app.example.com loadtests/k6/smoke.js
import http from 'k6/http';
import { check } from 'k6';
import { url, baseOptions, params, backendName, num } from './lib.js';

export const options = Object.assign(baseOptions(), {
  vus: 1,
  iterations: num('ITERATIONS', 5),
  thresholds: { checks: ['rate==1.0'] },
});

export default function () {
  const api = http.get(url('/api/v2/users?id=7'), params());
  check(api, {
    '/api/v2 is 200': (r) => r.status === 200,
    '/api/v2 reaches v2': (r) => backendName(r) === 'v2',
    '/api/v2 keeps path and query': (r) => r.json('path') === '/api/v2/users?id=7',
  });

  const canary = http.get(url('/'), params({ 'x-canary': 'true' }));
  check(canary, {
    'x-canary is 200': (r) => r.status === 200,
    'x-canary reaches canary': (r) => backendName(r) === 'canary',
  });

  const split = http.get(url('/shop'), params());
  check(split, {
    'default route is 200': (r) => r.status === 200,
    'default route reaches stable or canary': (r) => ['stable', 'canary'].includes(backendName(r)),
    'gateway adds x-request-id': (r) => (r.json('headers.x-request-id') || '').length === 36,
  });

  const unknownHost = params({ Host: 'unknown.example.org' });
  unknownHost.responseCallback = http.expectedStatuses(404);
  const unknown = http.get(url('/'), unknownHost);
  check(unknown, { 'unknown host is 404': (r) => r.status === 404 });
}
