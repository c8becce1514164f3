// Runs a wasm32-wasip1 benchmark binary in Node's V8 (the engine Envoy embeds):
// node --no-liftoff scripts/wasi-bench.mjs <binary.wasm> [--wall]   (used by the body scanners' benches)
// On a shared machine wall time depends on who else runs, so by default the binary's
// monotonic clock reads this process's CPU time instead (`--wall`: real time).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";

const [path, clock] = process.argv.slice(2);
const wasi = new WASI({ version: "preview1", args: [path] });
const module = await WebAssembly.compile(await readFile(path));
const imports = wasi.getImportObject();
let memory;
if (clock !== "--wall") {
  const wasiClock = imports.wasi_snapshot_preview1.clock_time_get;
  const MONOTONIC = 1;
  imports.wasi_snapshot_preview1.clock_time_get = (id, precision, out) => {
    if (id !== MONOTONIC) return wasiClock(id, precision, out);
    const { user, system } = process.cpuUsage();
    new DataView(memory.buffer).setBigUint64(out, BigInt(user + system) * 1000n, true);
    return 0;
  };
}
// The policy crate's proxy-wasm glue imports Envoy's host functions: the benchmark never
// calls them, so each is a stub that throws.
for (const { module: from, name } of WebAssembly.Module.imports(module)) {
  if (imports[from]?.[name]) continue;
  imports[from] ??= {};
  imports[from][name] = () => {
    throw new Error(`host function ${from}.${name} called`);
  };
}
const { exports } = await WebAssembly.instantiate(module, imports);
memory = exports.memory;
// The glue's `_initialize` export (a reactor's) would make node refuse to run `_start`.
wasi.start({ exports: { memory: exports.memory, _start: exports._start } });
