import { describe, expect, it } from 'vitest';
import { jsonText, PRETTY_MAX_CHARS } from '../../../src/api/http.js';

describe('JSON answers', () => {
  it('are indented while small, for a reader at a terminal', () => {
    const v = { job: '1', processes: [{ pid: 42, connections: [] }] };
    expect(jsonText(v)).toBe(JSON.stringify(v, null, 2) + '\n');
  });

  it('are compact past PRETTY_MAX_CHARS, and the same value', () => {
    const v = { connections: Array.from({ length: 2000 }, (_, i) => ({ local_port: i, remote_addr: '2001:db8::1', bytes_in: i * 1000 })) };
    const text = jsonText(v);
    expect(text.length).toBeGreaterThan(PRETTY_MAX_CHARS);
    expect(text).not.toContain('\n  ');
    expect(text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(text)).toEqual(v);
  });
});
