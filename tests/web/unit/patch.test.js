// RFC 6902 patch application, including the examples of RFC 6902 appendix A.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyPatch, PatchError, parsePointer } from '../../../ui/workshop/client.js';

const cases = [
  ['A.1 add an object member', { foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux' }], { foo: 'bar', baz: 'qux' }],
  ['A.2 add an array element', { foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }], { foo: ['bar', 'qux', 'baz'] }],
  ['A.3 remove an object member', { baz: 'qux', foo: 'bar' }, [{ op: 'remove', path: '/baz' }], { foo: 'bar' }],
  ['A.4 remove an array element', { foo: ['bar', 'qux', 'baz'] }, [{ op: 'remove', path: '/foo/1' }], { foo: ['bar', 'baz'] }],
  ['A.5 replace a value', { baz: 'qux', foo: 'bar' }, [{ op: 'replace', path: '/baz', value: 'boo' }], { baz: 'boo', foo: 'bar' }],
  ['A.6 move a value', { foo: { bar: 'baz', waldo: 'fred' }, qux: { corge: 'grault' } },
    [{ op: 'move', from: '/foo/waldo', path: '/qux/thud' }],
    { foo: { bar: 'baz' }, qux: { corge: 'grault', thud: 'fred' } }],
  ['A.7 move an array element', { foo: ['all', 'grass', 'cows', 'eat'] }, [{ op: 'move', from: '/foo/1', path: '/foo/3' }],
    { foo: ['all', 'cows', 'eat', 'grass'] }],
  ['A.8 test a value (success)', { baz: 'qux', foo: ['a', 2, 'c'] },
    [{ op: 'test', path: '/baz', value: 'qux' }, { op: 'test', path: '/foo/1', value: 2 }], { baz: 'qux', foo: ['a', 2, 'c'] }],
  ['A.10 add a nested member object', { foo: 'bar' }, [{ op: 'add', path: '/child', value: { grandchild: {} } }],
    { foo: 'bar', child: { grandchild: {} } }],
  ['A.11 ignore unrecognized elements', { foo: 'bar' }, [{ op: 'add', path: '/baz', value: 'qux', xyz: 123 }], { foo: 'bar', baz: 'qux' }],
  ['A.14 ~ escape ordering', { '/': 9, '~1': 10 }, [{ op: 'test', path: '/~01', value: 10 }], { '/': 9, '~1': 10 }],
  ['A.16 add an array value', { foo: ['bar'] }, [{ op: 'add', path: '/foo/-', value: ['abc', 'def'] }], { foo: ['bar', ['abc', 'def']] }],
  ['replace the whole document', { a: 1 }, [{ op: 'replace', path: '', value: [1, 2] }], [1, 2]],
  ['add at the root replaces it', { a: 1 }, [{ op: 'add', path: '', value: { b: 2 } }], { b: 2 }],
  ['copy deep-copies', { a: { b: [1] } }, [{ op: 'copy', from: '/a', path: '/c' }], { a: { b: [1] }, c: { b: [1] } }],
  ['append at the end index', { a: [1] }, [{ op: 'add', path: '/a/1', value: 2 }], { a: [1, 2] }],
  ['a typical state change', { mood: { primary: 'calm', energy: 0.5 }, familiar: { position: [1, 0, 2] } },
    [{ op: 'replace', path: '/mood/primary', value: 'alert' }, { op: 'replace', path: '/familiar/position/2', value: -1.5 },
      { op: 'remove', path: '/mood/energy' }, { op: 'add', path: '/note', value: null }],
    { mood: { primary: 'alert' }, familiar: { position: [1, 0, -1.5] }, note: null }],
  ['an empty patch changes nothing', { a: 1 }, [], { a: 1 }],
];

for (const [name, doc, patch, expected] of cases) {
  test(name, () => {
    const before = structuredClone(doc);
    assert.deepEqual(applyPatch(doc, patch), expected);
    assert.deepEqual(doc, before, 'the input document is not changed');
  });
}

const failures = [
  ['A.9 test a value (error)', { baz: 'qux' }, [{ op: 'test', path: '/baz', value: 'bar' }]],
  ['A.12 add to a nonexistent target', { foo: 'bar' }, [{ op: 'add', path: '/baz/bat', value: 'qux' }]],
  ['A.15 comparing strings and numbers', { '/': 9, '~1': 10 }, [{ op: 'test', path: '/~01', value: '10' }]],
  ['remove a missing member', { a: 1 }, [{ op: 'remove', path: '/b' }]],
  ['replace a missing member', { a: 1 }, [{ op: 'replace', path: '/b', value: 1 }]],
  ['an index past the end', { a: [1] }, [{ op: 'add', path: '/a/3', value: 1 }]],
  ['a leading zero index', { a: [1, 2] }, [{ op: 'replace', path: '/a/01', value: 1 }]],
  ['"-" is only for adding', { a: [1] }, [{ op: 'remove', path: '/a/-' }]],
  ['a path without a slash', { a: 1 }, [{ op: 'remove', path: 'a' }]],
  ['an unknown op', { a: 1 }, [{ op: 'frobnicate', path: '/a' }]],
  ['a missing value', { a: 1 }, [{ op: 'add', path: '/b' }]],
  ['moving into a child of itself', { a: { b: {} } }, [{ op: 'move', from: '/a', path: '/a/b/c' }]],
  ['descending into a scalar', { a: 1 }, [{ op: 'add', path: '/a/b', value: 1 }]],
  ['not an array', { a: 1 }, { op: 'remove', path: '/a' }],
];

for (const [name, doc, patch] of failures) {
  test(`refuses: ${name}`, () => {
    const before = structuredClone(doc);
    assert.throws(() => applyPatch(doc, patch), PatchError);
    assert.deepEqual(doc, before);
  });
}

test('a failing operation applies none of the patch', () => {
  const doc = { a: 1 };
  assert.throws(() => applyPatch(doc, [{ op: 'replace', path: '/a', value: 2 }, { op: 'remove', path: '/zzz' }]), PatchError);
  assert.deepEqual(doc, { a: 1 });
});

test('untouched branches are shared, touched ones copied', () => {
  const doc = { keep: { big: [1, 2, 3] }, change: { x: 1 } };
  const next = /** @type {any} */ (applyPatch(doc, [{ op: 'replace', path: '/change/x', value: 2 }]));
  assert.equal(next.keep, doc.keep);
  assert.notEqual(next.change, doc.change);
});

test('__proto__ stays plain data', () => {
  const doc = JSON.parse('{"a":{}}');
  const next = /** @type {any} */ (applyPatch(doc, JSON.parse('[{"op":"add","path":"/a/__proto__","value":{"polluted":true}}]')));
  assert.equal(({}).polluted, undefined);
  assert.equal(next.a.polluted, undefined);
  assert.deepEqual(Object.keys(next.a), ['__proto__']);
  assert.deepEqual(next.a.__proto__ === Object.prototype, false);
});

test('JSON pointers unescape ~1 and ~0 in that order', () => {
  assert.deepEqual(parsePointer(''), []);
  assert.deepEqual(parsePointer('/a~1b/m~0n/~01'), ['a/b', 'm~n', '~1']);
  assert.deepEqual(parsePointer('/'), ['']);
});
