// Authenticated traffic: every request carries `Authorization: Bearer TOKEN` and must
// succeed; with EXPECT_WITHOUT_TOKEN set (e.g. 401 or 403), requests without the token
// must get that status. For gateways with RequestAuthentication/AuthorizationPolicy.
//
//   k6 run -e BASE_URL=https://app.example.com -e TOKEN="$(cat token.jwt)" -e EXPECT_WITHOUT_TOKEN=403 loadtests/k6/jwt.js
import http from 'k6/http';
import { check } from 'k6';
import { url, baseOptions, params, num } from './lib.js';

if (!__ENV.TOKEN) {
  throw new Error('jwt.js needs TOKEN: a JWT the gateway accepts');
}

const rate = num('RATE', 50);

export const options = Object.assign(baseOptions(), {
  scenarios: {
    authenticated: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.max(5, Math.ceil(rate / 20)),
      maxVUs: Math.max(20, Math.ceil(rate / 5)),
    },
  },
  thresholds: {
    checks: ['rate==1.0'],
    http_req_duration: [`p(95)<${num('P95_MS', 50)}`, `p(99)<${num('P99_MS', 100)}`],
  },
});

const path = __ENV.PATH_UNDER_TEST || '/';
const without = __ENV.EXPECT_WITHOUT_TOKEN ? Number(__ENV.EXPECT_WITHOUT_TOKEN) : undefined;

export default function () {
  const r = http.get(url(path), params());
  check(r, { 'with token: 2xx': (res) => res.status >= 200 && res.status < 300 });
  if (without !== undefined && __ITER % 10 === 0) {
    const anon = http.get(url(path));
    check(anon, { [`without token: ${without}`]: (res) => res.status === without });
  }
}
