#!/usr/bin/env node
// A `solc` stand-in over the npm `solc` package (solcjs), for py-solc-x / ape-solidity and slither.
//
// No native solc can be downloaded where fedoracle is built, so bootstrap registers this script
// (through a tiny shell wrapper) as `solc-v<version>` in py-solc-x's folder. It answers the calls
// those tools make of a native solc:
//   --version                      "Version: X.Y.Z+commit.HASH.Linux.g++"
//   --help                         a help text whose `--combined-json` line lists the output keys
//   --standard-json [opts]         standard JSON in on stdin, standard JSON out on stdout
//   --combined-json KEYS [opts] F  (slither) combined JSON for the given files
// Imports are read from disk, relative to --base-path / --include-path / the current folder.
"use strict";
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const args = process.argv.slice(2);
const full = solc.version(); // e.g. 0.8.28+commit.7893614a.Emscripten.clang
const version = full.replace(/\.Emscripten\.clang$/, "");
const COMBINED_KEYS = "abi,asm,ast,bin,bin-runtime,devdoc,function-debug,function-debug-runtime,generated-sources,generated-sources-runtime,hashes,metadata,opcodes,srcmap,srcmap-runtime,storage-layout,userdoc";

function option(name) {
  const i = args.indexOf(name);
  if (i >= 0 && i + 1 < args.length) return args[i + 1];
  const eq = args.find((a) => a.startsWith(name + "="));
  return eq ? eq.slice(name.length + 1) : undefined;
}
function options(name) {
  const out = [];
  args.forEach((a, i) => {
    if (a === name && i + 1 < args.length) out.push(args[i + 1]);
    else if (a.startsWith(name + "=")) out.push(a.slice(name.length + 1));
  });
  return out;
}

const roots = [option("--base-path"), ...options("--include-path"), process.cwd()]
  .filter(Boolean)
  .flatMap((p) => p.split(","));
const remaps = args.filter((a) => !a.startsWith("-") && a.includes("=") && !a.includes(","));

function findImports(importPath) {
  let p = importPath;
  for (const r of remaps) {
    const [prefix, target] = r.split("=");
    if (p.startsWith(prefix)) { p = target + p.slice(prefix.length); break; }
  }
  const candidates = path.isAbsolute(p) ? [p] : roots.map((r) => path.resolve(r, p));
  for (const c of candidates) {
    if (fs.existsSync(c)) return { contents: fs.readFileSync(c, "utf8") };
  }
  return { error: `File not found: ${importPath} (searched ${candidates.join(", ")})` };
}

function compile(input) {
  return solc.compile(JSON.stringify(input), { import: findImports });
}

if (args.includes("--version")) {
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${version}.Linux.g++\n`);
} else if (args.includes("--help")) {
  process.stdout.write(`solc, the solidity compiler commandline interface (solcjs stand-in)\n\nOutput Components:\n  --combined-json abi,bin,... Output a single json document containing the specified information.\n                       Available: ${COMBINED_KEYS}\n  --combined-json ${COMBINED_KEYS}\n`);
} else if (args.includes("--standard-json")) {
  const input = JSON.parse(fs.readFileSync(0, "utf8"));
  process.stdout.write(compile(input));
} else if (args.includes("--combined-json")) {
  // The subset slither needs: one source unit per file given, ast + abi + bytecode.
  const keys = option("--combined-json").split(",");
  const files = args.filter((a, i) => !a.startsWith("-") && !a.includes("=") && args[i - 1] !== "--combined-json" && !["--base-path", "--include-path", "--allow-paths", "--evm-version", "--optimize-runs"].includes(args[i - 1]) && a.endsWith(".sol"));
  const sources = {};
  for (const f of files) sources[f] = { content: fs.readFileSync(f, "utf8") };
  const evmVersion = option("--evm-version");
  const settings = {
    optimizer: { enabled: args.includes("--optimize"), runs: Number(option("--optimize-runs") || 200) },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode", "evm.deployedBytecode", "evm.methodIdentifiers", "userdoc", "devdoc", "metadata", "storageLayout"], "": ["ast"] } },
  };
  if (evmVersion) settings.evmVersion = evmVersion;
  // As native solc does, remappings rename the imported source units (slither then finds the
  // remapped paths on disk, e.g. toolchain/node_modules/@openzeppelin/...).
  if (remaps.length) settings.remappings = remaps;
  const out = JSON.parse(compile({ language: "Solidity", sources, settings }));
  const errors = (out.errors || []).filter((e) => e.severity === "error");
  if (errors.length) {
    process.stderr.write(errors.map((e) => e.formattedMessage).join("\n"));
    process.exit(1);
  }
  const result = { contracts: {}, sources: {}, sourceList: Object.keys(out.sources || {}), version: full };
  for (const [file, unit] of Object.entries(out.sources || {})) result.sources[file] = { AST: unit.ast, id: unit.id };
  for (const [file, contracts] of Object.entries(out.contracts || {})) {
    for (const [name, c] of Object.entries(contracts)) {
      const entry = {};
      if (keys.includes("abi")) entry.abi = c.abi;
      if (keys.includes("bin")) entry.bin = c.evm.bytecode.object;
      if (keys.includes("bin-runtime")) entry["bin-runtime"] = c.evm.deployedBytecode.object;
      if (keys.includes("srcmap")) entry.srcmap = c.evm.bytecode.sourceMap;
      if (keys.includes("srcmap-runtime")) entry["srcmap-runtime"] = c.evm.deployedBytecode.sourceMap;
      if (keys.includes("hashes")) entry.hashes = c.evm.methodIdentifiers;
      if (keys.includes("userdoc")) entry.userdoc = c.userdoc;
      if (keys.includes("devdoc")) entry.devdoc = c.devdoc;
      if (keys.includes("metadata")) entry.metadata = c.metadata;
      if (keys.includes("storage-layout")) entry["storage-layout"] = c.storageLayout;
      result.contracts[`${file}:${name}`] = entry;
    }
  }
  process.stdout.write(JSON.stringify(result));
} else {
  process.stderr.write(`solc stand-in: unsupported arguments: ${args.join(" ")}\n`);
  process.exit(2);
}
