// The reconnect schedule: 1, 2, 4, 8, 16, 30 s (capped), spread by jitter, never above the cap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, DEFAULTS } from '../../../ui/workshop/client.js';

const middle = () => 0.5; // no jitter either way

test('doubles from one second and caps at thirty', () => {
  const delays = [0, 1, 2, 3, 4, 5, 6, 7, 20, 1000].map((n) => backoffDelay(n, { random: middle }));
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]);
});

test('the defaults are the schedule the Workshop asks for', () => {
  assert.equal(DEFAULTS.backoffBaseMs, 1000);
  assert.equal(DEFAULTS.backoffMaxMs, 30000);
  assert.ok(DEFAULTS.backoffJitter > 0 && DEFAULTS.backoffJitter < 0.5);
});

test('jitter spreads each step by at most the configured fraction', () => {
  for (const attempt of [0, 1, 2, 3, 4]) {
    const nominal = 1000 * 2 ** attempt;
    const low = backoffDelay(attempt, { random: () => 0 });
    const high = backoffDelay(attempt, { random: () => 0.999999 });
    assert.equal(low, Math.round(nominal * (1 - DEFAULTS.backoffJitter)));
    assert.equal(high, Math.round(nominal * (1 + DEFAULTS.backoffJitter)));
  }
});

test('jitter never pushes a delay over the cap or under zero', () => {
  for (let i = 0; i < 2000; i++) {
    const attempt = i % 12;
    const d = backoffDelay(attempt);
    assert.ok(d >= 0 && d <= 30000, `attempt ${attempt}: ${d}`);
    if (attempt >= 5) assert.ok(d >= 30000 * (1 - DEFAULTS.backoffJitter), `attempt ${attempt}: ${d}`);
  }
});

test('two clients almost never pick the same delay', () => {
  const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(3)));
  assert.ok(seen.size > 30);
});

test('custom base and cap, and odd inputs', () => {
  assert.equal(backoffDelay(0, { baseMs: 10, maxMs: 50, random: middle }), 10);
  assert.equal(backoffDelay(3, { baseMs: 10, maxMs: 50, random: middle }), 50);
  assert.equal(backoffDelay(-4, { random: middle }), 1000);
  assert.equal(backoffDelay(2.7, { random: middle }), 4000);
  assert.equal(backoffDelay(Number.MAX_SAFE_INTEGER, { random: middle }), 30000);
});
