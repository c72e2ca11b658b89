// `netprof daemon --config FILE` without the command-line module, so that these tests do not
// depend on whatever else src/cli.ts grows: the same runDaemon(), the same exit statuses.
import { runDaemon, StartupError } from '../../../dist/daemon.js';

const configFile = process.argv[process.argv.indexOf('--config') + 1];
runDaemon({ configFile, configGiven: true, overrides: [] }).catch((e) => {
  if (e instanceof StartupError) {
    process.stderr.write(`netprof: ${e.message}\n`);
    process.exit(e.exitCode);
  }
  process.stderr.write(`netprof: ${e.stack ?? e}\n`);
  process.exit(1);
});
