#!/usr/bin/env python3
"""The worker's module graph: which module imports which, import cycles, and
the layering rules of docs/architecture.md.

    python3 scripts/module-graph.py [--check] [--dot]

A module here is a top-level module of the crate (`stage`, `store`, ...)
and, one level down, a submodule (`stage::apply`, `mail::series`). An edge
A -> B is any path naming B from A's code (`crate::B`, `super::B`, a `use`
of it), tests (`#[cfg(test)] mod tests`) left out. Cycles are the strongly
connected components with more than one module, at both levels. `--check`
exits 1 when there is a cycle or a layering rule is broken (CI runs it);
`--dot` prints the top-level graph for Graphviz.
"""
import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "worker", "src")

# Who may not import whom (docs/architecture.md). The heavy parts know
# nothing of the state machine, the CLI or the server; the patch engine
# knows nothing of the store or the config; config imports no stage types;
# the store imports no stage; only `cli` and `main` know the CLI.
FORBIDDEN = {
    "patch": {"store", "config", "stage", "cli", "server"},
    "gitfetch": {"store", "config", "stage", "cli", "server", "mail"},
    "mail": {"stage", "cli", "server"},
    "rpm": {"store", "stage", "cli", "server"},
    "yum": {"store", "stage", "cli", "server"},
    "checks": {"store", "stage", "cli", "server"},
    "notify": {"store", "stage", "cli", "server"},
    "junit": {"store", "stage", "cli", "server"},
    "vocabulary": {"store", "stage", "cli", "server", "config"},
    "config": {"stage", "store", "cli", "server"},
    "store": {"stage", "cli", "server"},
    "stage": {"cli", "server"},
    "server": {"cli"},
}


def module_of(path):
    """(top, sub) of a source file: `stage/apply.rs` -> ("stage", "apply")."""
    rel = os.path.relpath(path, SRC)
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        return (parts[0], None)
    return (parts[0], parts[1] if len(parts) > 1 else None)


def strip_tests(text):
    """The file without its `#[cfg(test)] mod tests { ... }` block and
    without comments and string literals (paths in them are not imports)."""
    # One pass, so `//` inside a string ("http://") is not a comment and
    # a quote inside a comment does not open a string.
    text = re.sub(
        r'//[^\n]*|r#"(?:.|\n)*?"#|"(?:\\.|[^"\\])*"',
        lambda m: "" if m.group(0).startswith("//") else '""',
        text,
    )
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    if m:
        text = text[: m.start()]
    return text


def expand_groups(text):
    """`use crate::{a, b::c}` -> `use crate::a; use crate::b::c;`, one level."""
    def repl(m):
        head, body = m.group(1), m.group(2)
        items = [i.strip() for i in body.split(",") if i.strip()]
        return " ".join(f"{head}::{i};" for i in items)
    for _ in range(3):
        text = re.sub(r"((?:crate|super)(?:::\w+)*)::\{([^{}]*)\}", repl, text)
    return text


def references(path, top, sub):
    text = expand_groups(strip_tests(open(path, encoding="utf-8").read()))
    refs = set()
    for m in re.finditer(r"\bcrate::(\w+)(?:::(\w+))?", text):
        refs.add((m.group(1), m.group(2)))
    # `super::x` from a submodule file names a sibling (or the parent).
    depth_sub = sub is not None and not path.endswith("mod.rs")
    for m in re.finditer(r"\bsuper::(\w+)", text):
        if depth_sub:
            refs.add((top, m.group(1)))
    return refs


def tarjan(nodes, edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def main():
    files = []
    for dirpath, _, names in os.walk(SRC):
        files += [os.path.join(dirpath, n) for n in names if n.endswith(".rs")]
    tops = {module_of(f)[0] for f in files} - {"lib", "main"}
    subs = defaultdict(set)
    for f in files:
        t, s = module_of(f)
        if s:
            subs[t].add(s)
    top_edges = defaultdict(set)
    sub_edges = defaultdict(set)
    for f in files:
        t, s = module_of(f)
        if t in ("lib", "main"):
            continue
        for (rt, rs) in references(f, t, s):
            if rt in tops and rt != t:
                top_edges[t].add(rt)
            if rt == t and s and rs in subs[t] and rs != s:
                sub_edges[f"{t}::{s}"].add(f"{t}::{rs}")
    if "--dot" in sys.argv:
        print("digraph worker {")
        for a in sorted(top_edges):
            for b in sorted(top_edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    cycles = tarjan(tops, top_edges)
    sub_nodes = {f"{t}::{s}" for t in subs for s in subs[t]}
    cycles += tarjan(sub_nodes, sub_edges)
    broken = [
        f"{a} imports {b}"
        for a, banned in FORBIDDEN.items()
        for b in sorted(top_edges.get(a, set()) & banned)
    ]
    for a in sorted(top_edges):
        print(f"{a:<10} -> {', '.join(sorted(top_edges[a]))}")
    print(f"import cycles: {len(cycles)}")
    for c in cycles:
        print("  cycle: " + " <-> ".join(c))
    print(f"layering rules broken: {len(broken)}")
    for b in broken:
        print("  " + b)
    if "--check" in sys.argv and (cycles or broken):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
