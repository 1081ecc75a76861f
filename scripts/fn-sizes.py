#!/usr/bin/env python3
"""scripts/fn-sizes.py — the longest functions under src/, for STYLE.md's
"a function is a page" (past ~80 lines, name the steps).

    scripts/fn-sizes.py [--top N] [--exclude PATH ...] [--tests] [ROOT]

Counts the lines of every `fn` with a body, from its `fn` line to its
closing brace (attributes and doc comments not counted), and prints the
longest, with their file and first line. Test code (`tests.rs` files and
`mod tests` blocks) is left out unless --tests is given. A text scan, not a
parser: it skips strings, chars and comments well enough for rustfmt'd code.
"""

import argparse
import os
import re
import sys

FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")
TEST_MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+tests\s*\{")


def strip(line, state):
    """The line without strings, chars and comments; `state` carries an open
    block comment or raw string across lines."""
    out = []
    i = 0
    n = len(line)
    while i < n:
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"] = False
            i = j + 2
            continue
        if state["raw"] is not None:
            end = '"' + "#" * state["raw"]
            j = line.find(end, i)
            if j < 0:
                return "".join(out)
            state["raw"] = None
            i = j + len(end)
            continue
        if state["str"]:
            while i < n:
                if line[i] == "\\":
                    i += 2
                    continue
                if line[i] == '"':
                    state["str"] = False
                    i += 1
                    break
                i += 1
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["raw"] = len(m.group(1))
            i += m.end()
            continue
        if c == '"':
            state["str"] = True
            i += 1
            continue
        if c == "'":
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", line[i:])
            if m:
                i += m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def functions(path, with_tests):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    state = {"block": False, "raw": None, "str": False}
    clean = [strip(l, state) for l in lines]
    found = []
    depth = 0
    test_depth = None
    open_fns = []  # (name, start line, depth at which its body opened)
    pending = None  # a fn whose body has not opened yet
    parens = 0
    for no, (raw, line) in enumerate(zip(lines, clean), start=1):
        if test_depth is None and TEST_MOD.match(raw) and not with_tests:
            test_depth = depth
        m = FN.match(raw)
        if m and test_depth is None:
            pending = (m.group(1), no)
            parens = 0
        for ch in line:
            if ch in "([":
                parens += 1
            elif ch in ")]":
                parens -= 1
            elif ch == "{":
                if pending is not None and parens == 0:
                    open_fns.append((pending[0], pending[1], depth))
                    pending = None
                depth += 1
            elif ch == "}":
                depth -= 1
                if open_fns and open_fns[-1][2] == depth:
                    name, start, _ = open_fns.pop()
                    found.append((no - start + 1, name, start))
                if test_depth is not None and depth == test_depth:
                    test_depth = None
            elif ch == ";" and pending is not None and parens == 0:
                # A declaration without a body (a trait method).
                pending = None
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default="src")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--exclude", action="append", default=[], help="a path (relative to ROOT) or PATH:fn")
    ap.add_argument("--tests", action="store_true")
    args = ap.parse_args()
    rows = []
    for dirpath, _, files in os.walk(args.root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, args.root)
            if rel in args.exclude or (not args.tests and (name == "tests.rs" or "/tests/" in "/" + rel)):
                continue
            for length, fn, start in functions(path, args.tests):
                if f"{rel}:{fn}" in args.exclude:
                    continue
                rows.append((length, f"{rel}:{start}", fn))
    rows.sort(key=lambda r: (-r[0], r[1]))
    for length, at, fn in rows[: args.top]:
        print(f"{length:5}  {fn:40} {at}")
    over = sum(1 for r in rows if r[0] > 80)
    print(f"functions over 80 lines: {over}", file=sys.stderr)


if __name__ == "__main__":
    main()
