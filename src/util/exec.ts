import { execFile, type ExecFileOptions } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a program with an argument array — never through a shell, so no value from a request or
 * a config file can become a command. Resolves with the exit code instead of throwing, so
 * callers decide what a failure means.
 */
export function run(file: string, args: readonly string[], options: ExecFileOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { maxBuffer: 256 * 1024 * 1024, encoding: 'utf8', ...options },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 127) : 0;
        const errText = String(stderr ?? '') || (error && typeof error.code !== 'number' ? error.message : '');
        resolve({ code, stdout: String(stdout ?? ''), stderr: errText });
      },
    );
  });
}

/** Like run(), but a non-zero exit becomes an Error carrying the program's own message. */
export async function runOk(file: string, args: readonly string[], options: ExecFileOptions = {}): Promise<string> {
  const r = await run(file, args, options);
  if (r.code !== 0) {
    const msg = r.stderr.trim().split('\n').slice(0, 3).join(' | ') || `exit status ${r.code}`;
    throw new Error(`${file} ${args.slice(0, 3).join(' ')}…: ${msg}`);
  }
  return r.stdout;
}
