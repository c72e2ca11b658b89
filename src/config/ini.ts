/**
 * A small reader for the original's config.ini, with configparser's rules: `[SECTION]` headers,
 * `KEY = value` or `KEY: value`, keys case-insensitive, whole-line `#`/`;` comments. Hand-written
 * rather than the `ini` package because start-up errors must name the file, line and key, and
 * duplicates and stray lines must be refused rather than silently merged.
 */

export interface IniEntry {
  section: string;
  key: string;
  value: string;
  line: number;
}

export class IniError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

export function parseIni(text: string): IniEntry[] {
  const entries: IniEntry[] = [];
  const seen = new Set<string>();
  let section: string | undefined;
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = i + 1;
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed.startsWith(';')) return;
    if (/^\s/.test(raw)) throw new IniError(line, `indented line "${trimmed}": continuation lines are not supported`);
    const header = /^\[([^\]]+)\]$/.exec(trimmed);
    if (header) {
      section = header[1]!.trim();
      return;
    }
    const sep = trimmed.search(/[=:]/);
    if (sep <= 0) throw new IniError(line, `"${trimmed}" is not KEY = value`);
    if (section === undefined) throw new IniError(line, `"${trimmed}" comes before any [SECTION] header`);
    const key = trimmed.slice(0, sep).trim().toUpperCase();
    const value = trimmed.slice(sep + 1).trim();
    const id = `${section}\0${key}`;
    if (seen.has(id)) throw new IniError(line, `${key} is set twice in [${section}]`);
    seen.add(id);
    entries.push({ section, key, value, line });
  });
  return entries;
}
