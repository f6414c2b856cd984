// Load with thresholds that fail the run when crossed. SCENARIO selects the shape:
//   constant (default)  constant-arrival-rate at RATE requests/s for DURATION
//   ramp                ramping-arrival-rate from 1 to RATE over DURATION, then back down
//   soak                constant RATE for SOAK_DURATION (default 30m)
// Thresholds: ERROR_RATE (default 0.01), P95_MS (default 50), P99_MS (default 100).
// PATH_UNDER_TEST (default /) picks the route.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e HOST=app.example.com -e RATE=500 -e DURATION=1m loadtests/k6/load.js
import http from 'k6/http';
import { check } from 'k6';
import { url, baseOptions, params, num } from './lib.js';

const rate = num('RATE', 200);
const duration = __ENV.DURATION || '30s';
const vus = num('VUS', Math.max(10, Math.ceil(rate / 20)));

const shapes = {
  constant: { executor: 'constant-arrival-rate', rate, timeUnit: '1s', duration, preAllocatedVUs: vus, maxVUs: vus * 4 },
  ramp: {
    executor: 'ramping-arrival-rate',
    startRate: 1,
    timeUnit: '1s',
    preAllocatedVUs: vus,
    maxVUs: vus * 4,
    stages: [
      { target: rate, duration },
      { target: rate, duration },
      { target: 0, duration: '10s' },
    ],
  },
  soak: {
    executor: 'constant-arrival-rate',
    rate,
    timeUnit: '1s',
    duration: __ENV.SOAK_DURATION || '30m',
    preAllocatedVUs: vus,
    maxVUs: vus * 4,
  },
};
const scenario = __ENV.SCENARIO || 'constant';
if (!shapes[scenario]) {
  throw new Error(`SCENARIO ${scenario} is not one of ${Object.keys(shapes).join(', ')}`);
}

export const options = Object.assign(baseOptions(), {
  scenarios: { [scenario]: shapes[scenario] },
  thresholds: {
    http_req_failed: [`rate<${num('ERROR_RATE', 0.01)}`],
    http_req_duration: [`p(95)<${num('P95_MS', 50)}`, `p(99)<${num('P99_MS', 100)}`],
    dropped_iterations: [`count<${Math.max(1, Math.ceil(rate))}`],
  },
});

const path = __ENV.PATH_UNDER_TEST || '/';

export default function () {
  const r = http.get(url(path), params());
  check(r, { 'status is 2xx': (res) => res.status >= 200 && res.status < 300 });
}
