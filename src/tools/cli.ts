import { Command, Option, type CommanderError } from 'commander';
import { DEFAULT_DAEMON, EXIT, UsageError, endpoint, exitWith, type ClientOptions } from './client.js';
import { end, endJob, shutdown, start, status } from './commands.js';
import { run } from './run.js';
import { report } from './report.js';
import { top } from './top.js';

/** The operators' tools as subcommands of `netprof`, next to `netprof daemon`. */

export const EXIT_HELP = `
Exit status:
  0  done
  1  the daemon refused (its reason is on stderr), or is degraded (status)
  2  usage error
  3  the daemon could not be reached`;

const DAEMON_HELP = `
The daemon: --daemon http://HOST:PORT or unix:/PATH (default $NETPROF_DAEMON, else ${DEFAULT_DAEMON}).
A token (the daemon's TOKEN) from --token, --token-file or $NETPROF_TOKEN.`;

function client(cmd: Command): Command {
  return cmd
    .addOption(new Option('-d, --daemon <url>', `the daemon's API: http://HOST:PORT or unix:/PATH (default ${DEFAULT_DAEMON})`))
    .option('--token <token>', 'bearer token for calls that change state (default $NETPROF_TOKEN)')
    .option('--token-file <file>', 'read the token from this file')
    .option('--timeout <seconds>', 'give up on an unanswered request after this long', '10');
}

/** Usage errors exit 2 (commander's default is 1); --help exits 0. */
function usageExits(cmd: Command): Command {
  return cmd.exitOverride((e: CommanderError) => {
    process.exit(e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.help' ? 0 : EXIT.USAGE);
  });
}

export function addTools(program: Command): void {
  program.enablePositionalOptions();

  usageExits(
    client(program.command('status'))
      .description("the daemon's health, counters and jobs")
      .option('--json', 'everything as one JSON object')
      .addHelpText('after', `${DAEMON_HELP}\n${EXIT_HELP.replace('or is degraded (status)', 'or is degraded or stopping')}`)
      .action((o: ClientOptions & { json?: boolean }) => exitWith(() => status(endpoint(o), o))),
  );

  usageExits(
    client(program.command('start'))
      .description('profile a process for a job (register its pid)')
      .argument('<job>', 'job id')
      .argument('<pid>', 'process id')
      .option('--owner <user>', 'the user the process must belong to (name or uid); checked by the daemon')
      .option('--birthdate <seconds>', 'its start time in epoch seconds (psutil create_time()); checked to within a second')
      .option('--json', "print the daemon's answer as JSON")
      .addHelpText('after', `${DAEMON_HELP}\n${EXIT_HELP}`)
      .action((job: string, pid: string, o: ClientOptions & { owner?: string; birthdate?: string; json?: boolean }) => exitWith(() => start(endpoint(o), job, pid, o))),
  );

  usageExits(
    client(program.command('end'))
      .description('end one process of a job: its open connections are logged')
      .argument('<job>', 'job id')
      .argument('<pid>', 'process id')
      .option('--json', "print the daemon's answer as JSON")
      .addHelpText('after', `${DAEMON_HELP}\n${EXIT_HELP}`)
      .action((job: string, pid: string, o: ClientOptions & { json?: boolean }) => exitWith(() => end(endpoint(o), job, pid, o))),
  );

  usageExits(
    client(program.command('end-job'))
      .description('end a job: every open connection of its processes is logged')
      .argument('<job>', 'job id')
      .option('--json', "print the daemon's answer as JSON")
      .addHelpText('after', `${DAEMON_HELP}\n${EXIT_HELP}`)
      .action((job: string, o: ClientOptions & { json?: boolean }) => exitWith(() => endJob(endpoint(o), job, o))),
  );

  usageExits(
    client(program.command('shutdown'))
      .description('stop the daemon: it logs every open connection, removes its counters and exits 0')
      .addHelpText('after', `${DAEMON_HELP}\n${EXIT_HELP}`)
      .action((o: ClientOptions) => exitWith(() => shutdown(endpoint(o)))),
  );

  usageExits(
    client(program.command('run'))
      .description('run a command profiled from its first instruction, then print its connections to stderr')
      .argument('<command...>', 'the command and its arguments (put -- before them)')
      .option('-j, --job <id>', 'job id (default run-<pid>-<epoch seconds>)')
      .option('--require', 'do not run the command if the daemon cannot register it (default: run it unprofiled, with a warning)')
      .option('-q, --quiet', 'no summary on stderr')
      .option('--totals <file>', 'write status=, bytes_in=, bytes_out=, packets_in=, packets_out=, connections=, seconds= lines here')
      .option('--log <path>', "read the job's exact per-connection records from the daemon's log (a file, base name or LOG_DIR)")
      .option('--poll <seconds>', 'how often to look at the open connections while the command runs (0: never)', '1')
      .passThroughOptions()
      .addHelpText(
        'after',
        `${DAEMON_HELP}

The command starts stopped, is registered by its own pid, then continues: it is profiled
before its first connection, with FOLLOW_CHILDREN = yes or no (its children only with yes).

Exit status: the command's (128+N when killed by signal N); 127 when it cannot be run.
With --require: 1 if the daemon refused it, 3 if unreachable (the command does not run).
2 usage error.`,
      )
      .action((argv: string[], o: ClientOptions & { job?: string; require?: boolean; quiet?: boolean; totals?: string; log?: string; poll?: string }) =>
        exitWith(async () => {
          if (o.poll !== undefined && !(Number(o.poll) >= 0)) throw new UsageError(`--poll ${o.poll}: expected seconds`);
          return run(endpoint(o), argv, o);
        }),
      ),
  );

  usageExits(
    program
      .command('report')
      .description('per job, from connection logs: bytes each way, connections, remote hosts and their share, first and last activity, busiest minute')
      .argument('[files...]', 'log files, base names (x.log: its rolled x.log.N … x.log.1 are read first) or directories; - or none: stdin')
      .option('--csv', 'CSV, one line per job')
      .option('--json', 'JSON, with every remote host')
      .option('-j, --job <id>', 'only this job; repeatable', (v: string, prev: string[] = []) => [...prev, v])
      .option('--nodes', "each argument is one node's logs (LOG_DIR or file, NAME=PATH to name it): per-job totals across the nodes and the job → remote-host matrix")
      .option('--matrix', 'with --nodes --csv: the job → remote-host matrix, one line per pair')
      .addHelpText('after', '\nBoth log formats (tsv, jsonl) are read, detected line by line.\n\nExit status: 0 done, 2 usage error or unreadable file.')
      .action((files: string[], o: { csv?: boolean; json?: boolean; job?: string[]; nodes?: boolean; matrix?: boolean }) =>
        exitWith(async () => {
          await report(files, o);
        }),
      ),
  );

  usageExits(
    client(program.command('top'))
      .description('live view of jobs, processes and open connections, with rates')
      .option('-n, --interval <seconds>', 'seconds between frames', '2')
      .option('--once', 'print one frame (rates over one second) and exit')
      .addHelpText('after', `${DAEMON_HELP}\n${EXIT_HELP}`)
      .action((o: ClientOptions & { once?: boolean; interval?: string }) =>
        exitWith(async () => {
          if (!(Number(o.interval) > 0)) throw new UsageError(`--interval ${o.interval}: expected seconds`);
          return top(endpoint(o), o);
        }),
      ),
  );
}
