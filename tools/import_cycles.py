#!/usr/bin/env python3
"""Fails when a file of a crate imports a file that imports it, directly or
around a longer circle.

Usage: import_cycles.py [--allow A:B ...] CRATE_ROOT [CRATE_ROOT ...]

For each crate (its lib.rs or main.rs), every `use` tree and every path
through `crate::`, `super::`, `self::`, a child module or an imported name
(outside comments, strings and `#[cfg(test)]` modules) is resolved to the
file that defines what it names, re-exports followed. A file-level circle
is reported with its edges; `--allow a.rs:b.rs` accepts the circle of
exactly those two files. A reading of the text, not of the compiler: a
path it cannot resolve is left out, never guessed.
"""
import os
import re
import sys
from collections import defaultdict


def clean(text):
    """The text without comments, and with the contents of string and char
    literals blanked (raw strings included)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith('//', i):
            j = text.find('\n', i)
            i = n if j == -1 else j
            continue
        if text.startswith('/*', i):
            depth = 0
            while i < n:
                if text.startswith('/*', i):
                    depth, i = depth + 1, i + 2
                elif text.startswith('*/', i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
                if depth == 0:
                    break
            continue
        raw = re.match(r'b?r(#*)"', text[i:i + 40])
        if raw and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == '_')):
            end = text.find('"' + raw.group(1), i + raw.end())
            i = n if end == -1 else end + 1 + len(raw.group(1))
            out.append('""')
            continue
        if text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            out.append('""')
            i = j + 1
            continue
        if text[i] == "'":
            char = re.match(r"'(?:\\(?:x..|u\{[0-9a-fA-F]+\}|.)|[^'\\])'", text[i:i + 12])
            if char:
                out.append("' '")
                i += char.end()
                continue
        out.append(text[i])
        i += 1
    return ''.join(out)


def drop_tests(text):
    """The text without its inline `#[cfg(test)] mod name { ... }` blocks."""
    while True:
        m = re.search(r'#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod\s+\w+\s*\{', text)
        if not m:
            return text
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += text[i] == '{'
            depth -= text[i] == '}'
            if depth == 0:
                break
            i += 1
        text = text[:m.start()] + text[i + 1:]


class Module:
    def __init__(self, file, parent):
        self.file, self.parent = file, parent
        self.children, self.bindings, self.text = {}, {}, ''


def load(root_file):
    """Every module of the crate rooted at `root_file` that is a file."""
    mods = {}

    def visit(path, file, parent):
        m = Module(file, parent)
        mods[path] = m
        m.text = drop_tests(clean(open(file).read()))
        base, name = os.path.dirname(file), os.path.basename(file)
        if name not in ('mod.rs', 'lib.rs', 'main.rs'):
            base = os.path.join(base, name[:-3])
        decl = r'^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;'
        for d in re.finditer(decl, m.text, re.M):
            child = d.group(1)
            for candidate in (os.path.join(base, child + '.rs'), os.path.join(base, child, 'mod.rs')):
                if os.path.exists(candidate):
                    m.children[child] = visit(path + '::' + child, candidate, m)
                    break
        return m

    visit('crate', root_file, None)
    return mods


def use_leaves(text):
    """(prefix segments, last segment, alias) of every leaf of every `use`."""
    for u in re.finditer(r'\buse\s+([^;]+);', text):
        yield from expand(re.sub(r'\s+', ' ', u.group(1)).strip(), [])


def expand(tree, prefix):
    tree = tree.strip()
    if '{' in tree:
        head = [s for s in tree[:tree.index('{')].replace(' ', '').split('::') if s]
        inner, parts, depth, current = tree[tree.index('{') + 1:tree.rindex('}')], [], 0, ''
        for ch in inner:
            if ch == ',' and depth == 0:
                parts.append(current)
                current = ''
                continue
            depth += ch == '{'
            depth -= ch == '}'
            current += ch
        parts.append(current)
        for part in parts:
            if part.strip():
                yield from expand(part, prefix + head)
        return
    alias = None
    if ' as ' in tree:
        tree, alias = (s.strip() for s in tree.split(' as ', 1))
    segments = tree.replace(' ', '').split('::')
    yield prefix + segments[:-1], segments[-1], alias


def resolve(mod, segments, mods, depth=0):
    """The file defining what `segments` names, seen from `mod`."""
    if depth > 20 or not segments:
        return None
    if segments[0].startswith('@file:'):
        return segments[0][6:]
    first = segments[0]
    if first in ('crate', '$crate'):
        m, rest = mods['crate'], segments[1:]
    elif first == 'super':
        m, rest = mod, segments
        while rest and rest[0] == 'super':
            m, rest = m.parent, rest[1:]
            if m is None:
                return None
    elif first == 'self':
        m, rest = mod, segments[1:]
    elif first in mod.children:
        m, rest = mod, segments
    else:
        return None  # another crate
    while rest and rest[0] in m.children:
        m, rest = m.children[rest[0]], rest[1:]
    if not rest or rest[0] in ('*', 'self'):
        return m.file
    if rest[0] in m.bindings:
        found = resolve(m, m.bindings[rest[0]], mods, depth + 1)
        if found:
            return found
    return m.file


def graph(root_file):
    """File -> the files it imports."""
    mods = load(root_file)
    for m in mods.values():
        for macro in re.finditer(r'#\[macro_export\]\s*macro_rules!\s*(\w+)', m.text):
            mods['crate'].bindings[macro.group(1)] = ['@file:' + m.file]
    for m in mods.values():
        for prefix, last, alias in use_leaves(m.text):
            if last == '*':
                continue
            path = prefix if last == 'self' else prefix + [last]
            name = alias or (path[-1] if path else None)
            if name:
                m.bindings[name] = path
    edges = defaultdict(set)
    for m in mods.values():
        paths = [p if last == 'self' else p + [last] for p, last, _ in use_leaves(m.text) if last != '*']
        for p in re.finditer(r'(?<![\w:$])(\$?\w+)((?:::\w+)+)', m.text):
            segments = [p.group(1)] + p.group(2).strip(':').split('::')
            if p.group(1) in ('crate', '$crate', 'super', 'self') or p.group(1) in m.children:
                paths.append(segments)
            elif p.group(1) in m.bindings:
                paths.append(m.bindings[p.group(1)] + segments[1:])
        for path in paths:
            target = resolve(m, path, mods)
            if target and target != m.file:
                edges[m.file].add(target)
    return edges


def circles(edges):
    """The strongly connected sets of more than one file (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100_000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            strong(v)
    return found


def main(argv):
    allowed, roots = set(), []
    while argv:
        arg = argv.pop(0)
        if arg == '--allow':
            allowed.add(frozenset(argv.pop(0).split(':')))
        else:
            roots.append(arg)
    failed = False
    for root in roots:
        edges = graph(root)
        for circle in circles(edges):
            if frozenset(circle) in allowed:
                continue
            failed = True
            print(f'{root}: a circle of {len(circle)} files:')
            for a in circle:
                for b in sorted(edges[a] & set(circle)):
                    print(f'    {a} imports {b}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
