// Canary split check: sends REQUESTS requests to the default route, measures the
// share answered by the canary backend, and fails when it is off CANARY_PERCENT
// (default 10) by more than TOLERANCE points (default 2). Requests with
// `x-canary: true` must always reach the canary.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e HOST=app.example.com loadtests/k6/canary.js
import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { url, baseOptions, params, backendName, num } from './lib.js';

const expected = num('CANARY_PERCENT', 10) / 100;
const tolerance = num('TOLERANCE', 2) / 100;
const canaryShare = new Rate('canary_share');
const overrideToCanary = new Rate('header_override_to_canary');

export const options = Object.assign(baseOptions(), {
  scenarios: {
    split: {
      executor: 'shared-iterations',
      vus: num('VUS', 8),
      iterations: num('REQUESTS', 4000),
      maxDuration: __ENV.DURATION || '5m',
    },
  },
  thresholds: {
    canary_share: [`rate>=${(expected - tolerance).toFixed(4)}`, `rate<=${(expected + tolerance).toFixed(4)}`],
    header_override_to_canary: ['rate==1.0'],
    http_req_failed: ['rate==0'],
    checks: ['rate==1.0'],
  },
});

export default function () {
  const r = http.get(url('/'), params());
  const name = backendName(r);
  check(r, { 'split answered by stable or canary': () => name === 'stable' || name === 'canary' });
  canaryShare.add(name === 'canary');
  // One request in ten also checks the header override.
  if (__ITER % 10 === 0) {
    const o = http.get(url('/'), params({ 'x-canary': 'true' }));
    overrideToCanary.add(backendName(o) === 'canary');
  }
}
