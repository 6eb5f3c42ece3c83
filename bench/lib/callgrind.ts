/**
 * Instructions per function from a callgrind dump of a Node process, with JIT-compiled
 * JavaScript named through the perf map V8 writes with `--perf-basic-prof`
 * (/tmp/perf-<pid>.map: start, size and name of every code object). callgrind alone sees
 * JIT code as bare addresses. Used by bench/instructions.ts to say where token-handler's
 * instructions go beyond the bare proxy's.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { areaOf } from '../analyse-profile.js';

export interface FunctionCost {
  name: string;
  area: string;
  instructions: number;
}

/** Self instructions per function (summed over same-named code objects), largest first. */
export function functionCosts(dumpFile: string, perfMapFile: string): FunctionCost[] {
  const names = perfMapNames(perfMapFile);
  const annotated = execFileSync('callgrind_annotate', ['--threshold=100', dumpFile], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  const byName = new Map<string, FunctionCost>();
  for (const line of annotated.split('\n')) {
    const match = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line);
    if (!match || match[2]!.includes('PROGRAM TOTALS')) continue;
    const instructions = Number(match[1]!.replaceAll(',', ''));
    const raw = match[2]!;
    const address = /^\?\?\?:0x([0-9a-f]+)/.exec(raw)?.[1];
    const cost = address !== undefined ? javaScript(names(Number.parseInt(address, 16))) : native(raw);
    const known = byName.get(cost.name);
    if (known) known.instructions += instructions;
    else byName.set(cost.name, { ...cost, instructions });
  }
  return [...byName.values()].sort((a, b) => b.instructions - a.instructions);
}

/** Address → name of the code object covering it (the latest one written, as code moves). */
function perfMapNames(file: string): (address: number) => string {
  const entries = readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line, order) => {
      const [start, size, ...name] = line.split(' ');
      return { start: Number.parseInt(start!, 16), end: Number.parseInt(start!, 16) + Number.parseInt(size!, 16), name: name.join(' '), order };
    })
    .sort((a, b) => a.start - b.start || a.order - b.order);
  return (address) => {
    let low = 0;
    let high = entries.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (entries[middle]!.start <= address) low = middle + 1;
      else high = middle - 1;
    }
    let best: (typeof entries)[number] | undefined;
    // Entries that start at or before the address and may cover it (code objects are small).
    for (let i = high; i >= 0 && address - entries[i]!.start < 1 << 20; i--) {
      const entry = entries[i]!;
      if (address < entry.end && (!best || entry.order > best.order)) best = entry;
    }
    return best?.name ?? '(unnamed JIT code)';
  };
}

/** `JS:*name file:///…/x.js:1:2` → a short name and the area analyse-profile gives it. */
function javaScript(mapName: string): Omit<FunctionCost, 'instructions'> {
  const text = mapName.replace(/^(JS|RegExp|Function|LazyCompile|Eval):[*~^+]?/, (kind) => (kind.startsWith('RegExp') ? 'RegExp ' : ''));
  const space = text.lastIndexOf(' ');
  const functionName = space === -1 ? text : text.slice(0, space) || '(anonymous)';
  const url = space === -1 ? '' : text.slice(space + 1).replace(/^file:\/\//, '');
  const shortUrl = url.replace(/^.*?\/node_modules\//, '').replace(/^.*\/(src|dist|bench)\//, '$1/');
  const area = mapName.startsWith('RegExp') ? 'regular expressions' : areaOf({ functionName, url: url.replace('/dist/', '/src/'), lineNumber: 0, columnNumber: 0 });
  return { name: `${functionName} ${shortUrl}`.trim(), area };
}

/** A function of node's binary (V8 builtins and runtime, Node's C++), libc, or the kernel. */
function native(raw: string): Omit<FunctionCost, 'instructions'> {
  const name = raw.replace(/^\?\?\?:/, '').replace(/^\S*\/(?=[^/]+:)/, '').replace(/\s*\[[^\]]*\]$/, '').slice(0, 110);
  const area = /\[\/usr\/lib[^\]]*libc[.-]/.test(raw) ? 'libc (memcpy, malloc, …)' : 'V8 and Node runtime (builtins, C++)';
  return { name, area };
}
