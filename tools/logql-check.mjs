#!/usr/bin/env node
// Parse LogQL expressions with Grafana's own Lezer grammar (the one Grafana's query editor uses)
// and report syntax errors plus the label and field names each expression refers to.
//
// Usage: node logql-check.mjs 'EXPR' ['EXPR' ...]
//        echo '["EXPR", ...]' | node logql-check.mjs        (a JSON array of strings on stdin)
// Prints a JSON array, one object per expression:
//   {"expr", "ok", "errors": [{"at", "near"}], "stream_labels": [...], "fields": [...]}
// Exit code: 0 when every expression parses, 1 when one does not, 2 on bad usage.
import { parser } from '@grafana/lezer-logql';
import { readFileSync } from 'node:fs';

// Nodes whose Identifier children name a label or a structured-metadata/parsed field.
const FIELD_PARENTS = new Set([
  'Matcher', // inside a pipeline label filter (`| agentwatch_outcome="error"`)
  'Labels', // `by (...)` / `without (...)`
  'UnwrapExpr',
  'KeepLabel',
  'DropLabel',
  'NumberFilter',
  'DurationFilter',
  'BytesFilter',
]);

function check(expr) {
  const tree = parser.parse(expr);
  const errors = [];
  const streamLabels = new Set();
  const fields = new Set();
  const stack = [];
  tree.iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push({ at: node.from, near: expr.slice(Math.max(0, node.from - 20), node.to + 20) });
      }
      if (node.name === 'Identifier' && stack.length > 0) {
        const name = expr.slice(node.from, node.to);
        const parent = stack[stack.length - 1];
        if (parent === 'Matcher' && stack.includes('Selector')) streamLabels.add(name);
        else if (FIELD_PARENTS.has(parent) || stack.includes('LabelFilter')) fields.add(name);
      }
      stack.push(node.name);
    },
    leave() {
      stack.pop();
    },
  });
  // line_format / label_format templates read fields as {{.name}}: report those too.
  for (const m of expr.matchAll(/\{\{[^}]*?\.([A-Za-z_][A-Za-z0-9_]*)/g)) fields.add(m[1]);
  return {
    expr,
    ok: errors.length === 0,
    errors,
    stream_labels: [...streamLabels].sort(),
    fields: [...fields].sort(),
  };
}

let exprs = process.argv.slice(2);
if (exprs.length === 0) {
  const input = readFileSync(0, 'utf8').trim();
  try {
    exprs = JSON.parse(input);
  } catch (e) {
    process.stderr.write(`stdin is not a JSON array of strings: ${e.message}\n`);
    process.exit(2);
  }
  if (!Array.isArray(exprs) || !exprs.every((e) => typeof e === 'string')) {
    process.stderr.write('stdin must be a JSON array of strings\n');
    process.exit(2);
  }
}
const results = exprs.map(check);
process.stdout.write(JSON.stringify(results, null, 1) + '\n');
process.exit(results.every((r) => r.ok) ? 0 : 1);
