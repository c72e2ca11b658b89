import { describe, expect, it } from 'vitest';
import { JobEnds } from '../../../src/profiler/job-ends.js';

describe('a job’s end against registrations into it', () => {
  it('starts after the registrations still claiming, refuses new ones meanwhile, and answers a second end with the first’s result', async () => {
    const ends = new JobEnds();
    const order: string[] = [];
    const claim = ends.claiming('E', new Promise<void>((r) => setTimeout(() => (order.push('claimed'), r()), 30)));
    const result = { processes: 2, connectionsLogged: 5 };
    const end = ends.end('E', async () => (order.push('end runs'), result));
    expect(() => ends.refuseIfEnding('E')).toThrow(expect.objectContaining({ status: 409 }));
    expect(() => ends.refuseIfEnding('F'), 'another job').not.toThrow();
    const again = ends.end('E', async () => (order.push('second run'), { processes: 0, connectionsLogged: 0 }));
    await claim;
    expect(await end).toBe(result);
    expect(await again).toBe(result);
    expect(order).toEqual(['claimed', 'end runs']);
    expect(() => ends.refuseIfEnding('E'), 'once ended, the job may start again').not.toThrow();
  });
});
