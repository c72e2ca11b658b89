/**
 * The daemon's own diagnostics: one JSON object per line on stderr (journald keeps them when run
 * by systemd), never mixed with the connection log.
 */
type Level = 'debug' | 'info' | 'warn' | 'error';

const order: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
let threshold: Level = (process.env.NETPROF_DIAG_LEVEL as Level) in order ? (process.env.NETPROF_DIAG_LEVEL as Level) : 'info';

function emit(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (order[level] < order[threshold]) return;
  process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
}

export const diag = {
  debug: (msg: string, fields?: Record<string, unknown>) => emit('debug', msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => emit('info', msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => emit('warn', msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => emit('error', msg, fields),
  setLevel(level: Level): void {
    threshold = level;
  },
};
