// The send queue: ids, order, bounds, acknowledgement, retry and giving up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SendQueue, QueueFullError, BridgeError } from '../../../ui/workshop/client.js';

test('gives each message a unique id unless it has one', () => {
  const q = new SendQueue();
  const a = q.add({ type: 'message', text: 'a' });
  const b = q.add({ type: 'message', text: 'b' });
  const c = q.add({ type: 'message', text: 'c', id: 'mine-1' });
  assert.notEqual(a.id, b.id);
  assert.match(a.id, /^m-[0-9a-z]+-[0-9a-f]{16}$/);
  assert.equal(c.id, 'mine-1');
  assert.deepEqual(q.due().map((e) => e.message), [
    { type: 'message', text: 'a', id: a.id },
    { type: 'message', text: 'b', id: b.id },
    { type: 'message', text: 'c', id: 'mine-1' },
  ]);
  assert.equal(q.size, 3);
});

test('ids stay unique across many queues (a reloaded tab must not reuse one)', () => {
  const ids = new Set();
  for (let i = 0; i < 200; i++) ids.add(new SendQueue().add({ type: 'message' }).id);
  assert.equal(ids.size, 200);
});

test('an ack resolves the message and forgets it; unknown acks are ignored', async () => {
  const q = new SendQueue();
  const { id, done } = q.add({ type: 'message', text: 'hi' });
  assert.equal(q.ack('nope'), false);
  assert.equal(q.ack(id), true);
  assert.deepEqual(await done, { id });
  assert.equal(q.size, 0);
  assert.equal(q.ack(id), false, 'a second ack for the same id is harmless');
});

test('sent messages are not due again until a new connection', () => {
  const q = new SendQueue();
  const a = q.add({ type: 'message', text: 'a' });
  const b = q.add({ type: 'message', text: 'b' });
  q.markSent(a.id);
  assert.deepEqual(q.due().map((e) => e.id), [b.id]);
  q.markSent(b.id);
  assert.deepEqual(q.due(), []);
  q.markAllUnsent();
  assert.deepEqual(q.due().map((e) => e.id), [a.id, b.id], 're-sent in the original order');
});

test('bounded: beyond max, add refuses and nothing is dropped', async () => {
  const q = new SendQueue({ max: 2 });
  q.add({ type: 'message', text: '1' });
  q.add({ type: 'message', text: '2' });
  const third = q.add({ type: 'message', text: '3' });
  await assert.rejects(third.done, QueueFullError);
  assert.equal(q.size, 2);
  assert.deepEqual(q.due().map((e) => e.message.text), ['1', '2']);
});

test('a duplicate id is refused rather than merged', async () => {
  const q = new SendQueue();
  q.add({ type: 'message', id: 'x' });
  await assert.rejects(q.add({ type: 'message', id: 'x' }).done, BridgeError);
  assert.equal(q.size, 1);
});

test('retryLater holds a message back until its time', () => {
  const q = new SendQueue();
  const a = q.add({ type: 'message', text: 'a' });
  q.markSent(a.id);
  q.retryLater(a.id, 5000);
  assert.deepEqual(q.due(4999), []);
  assert.equal(q.nextDueAt(), 5000);
  assert.deepEqual(q.due(5000).map((e) => e.id), [a.id]);
});

test('fail rejects one message; failAll rejects the rest', async () => {
  const q = new SendQueue();
  const a = q.add({ type: 'message', text: 'a' });
  const b = q.add({ type: 'message', text: 'b' });
  const c = q.add({ type: 'message', text: 'c' });
  q.fail(a.id, new BridgeError('text_too_long', 'too long'));
  await assert.rejects(a.done, (e) => e instanceof BridgeError && e.code === 'text_too_long');
  q.failAll(new BridgeError('closed', 'closed'));
  await assert.rejects(b.done, /closed/);
  await assert.rejects(c.done, /closed/);
  assert.equal(q.size, 0);
});
