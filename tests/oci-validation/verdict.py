#!/usr/bin/env python3
"""The verdict on one validation program: verdict.py TAP STDERR EXIT_STATUS.

Prints "PASS <what>" or "FAIL <why>" and then the lines that show what failed. A program
passes when it exits 0, its plan (if any) matches the tests it ran, and no test failed
(TAP: "not ok" without a TODO directive). Two ways the suite's programs report that TAP
consumers miss are failures too: a YAML block with an "error" under a plan of no tests
(the hook programs report only that way), and a missing plan after tests. A program that
prints nothing and exits 0 passes (process_rlimits_fail reports success that way).
Failed tests of runtimetest inside a container are in the outer test's YAML "stdout"; they
are shown, not just the outer line.
"""

import json
import re
import sys

MAX_DETAILS = 8
TEST = re.compile(r"^(not ok|ok)\b\s*(\d*)\s*(?:- )?(.*)$")
PLAN = re.compile(r"^1\.\.(\d+)")


def directive(desc):
    m = re.search(r"#\s*(TODO|SKIP)\b", desc, re.IGNORECASE)
    return m.group(1).upper() if m else None


def first_line(s, limit=260):
    # go-multierror's "1 error occurred:" says nothing: the first error that follows does.
    lines = [l.strip(" \t*") for l in (s or "").splitlines()]
    lines = [l for l in lines if l and not re.match(r"^\d+ errors? occurred:$", l)]
    s = lines[0] if lines else ""
    # the runtimes' messages say what at the start and why at the end: keep both
    return s if len(s) <= limit else s[: limit // 3] + " ... " + s[-(limit - limit // 3 - 5) :]


def inner_failures(stdout):
    out = []
    for line in (stdout or "").splitlines():
        m = TEST.match(line)
        if m and m.group(1) == "not ok" and directive(m.group(3)) != "TODO":
            out.append(line.strip())
    return out


def explain(block):
    """Lines that say why, from a test's YAML block (a dict, or raw text)."""
    if not isinstance(block, dict):
        return [first_line(str(block))] if block else []
    lines = ["  " + l for l in inner_failures(block.get("stdout"))]
    if lines:
        return lines
    for key in ("error", "stderr", "actual"):
        if block.get(key):
            v = block[key]
            if key == "actual" and "expected" in block:
                v = f"expected {json.dumps(block['expected'])}, actual {json.dumps(v)}"
            lines.append(f"  {key}: {first_line(v if isinstance(v, str) else json.dumps(v))}")
    return lines


def main():
    tap_path, err_path, status = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(tap_path, errors="replace") as f:
        lines = f.read().splitlines()
    with open(err_path, errors="replace") as f:
        stderr = f.read()

    tests = []  # [ok, line, yaml_after, yaml_before, diagnostics]
    plan = None
    orphan_yaml = []  # blocks not right after a test line
    last_yaml = None  # the block just before the current line, if nothing came between
    prev_was_test = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "  ---":
            j = i + 1
            body = []
            while j < len(lines) and lines[j] != "  ...":
                body.append(lines[j])
                j += 1
            text = "\n".join(body)
            try:
                block = json.loads(text)
            except ValueError:
                block = text.strip()
            if tests and tests[-1][2] is None and prev_was_test:
                tests[-1][2] = block
            else:
                orphan_yaml.append(block)
            last_yaml = block
            prev_was_test = False
            i = j + 1
            continue
        m = TEST.match(line)
        prev_was_test = False
        if m:
            ok = m.group(1) == "ok" or directive(m.group(3)) == "TODO"
            tests.append([ok, line, None, last_yaml, []])
            prev_was_test = True
        elif line.startswith("# ") and tests:
            # "# expect: X, actual: Y" and the like, under the test before
            if not line.startswith("# Refer to:"):
                tests[-1][4].append(line[2:])
            prev_was_test = tests[-1][2] is None
        elif PLAN.match(line) and plan is None:
            plan = int(PLAN.match(line).group(1))
        last_yaml = None
        i += 1

    failed = [t for t in tests if not t[0]]
    details = []
    unexplained = False
    for t in failed:
        details.append(t[1])
        why = explain(t[2])
        if not why or why == ["  error: exit status 1"]:
            before = t[3]
            if isinstance(before, dict) and "stdout" in before:
                why = explain(before) or why
        if not why:
            why = ["  " + first_line(d) for d in t[4][:2]]
        details.extend(why)
        unexplained = unexplained or not why

    stderr_tail = [l for l in stderr.strip().splitlines() if l.strip()][-3:]
    reasons = []
    if unexplained and status == 0:
        details.extend("  stderr: " + first_line(l) for l in stderr_tail)
    if status != 0:
        reasons.append(f"exit status {status}")
        details.extend("  stderr: " + first_line(l) for l in stderr_tail)
    if failed:
        reasons.append(f"{len(failed)} of {len(tests)} tests failed")
    if plan is not None and plan > 0 and plan != len(tests):
        reasons.append(f"planned {plan} tests, ran {len(tests)}")
    if plan is None and tests:
        reasons.append("no plan")
    if not tests:
        errors = [b for b in orphan_yaml if isinstance(b, dict) and b.get("error")]
        if errors:
            reasons.append("an error outside any test")
            for b in errors:
                details.extend(explain(b))

    if reasons:
        print("FAIL " + "; ".join(reasons))
        if len(details) > MAX_DETAILS:
            more = len(details) - MAX_DETAILS
            details = details[:MAX_DETAILS] + [f"... {more} more lines in {tap_path}"]
        for d in details:
            print("    " + d)
        return
    skipped = sum(1 for t in tests if directive(TEST.match(t[1]).group(3)) == "SKIP")
    if not tests:
        print("PASS (no tests: by its exit status)" if not lines else "PASS (no tests)")
    else:
        print(f"PASS ({len(tests) - skipped} ok, {skipped} skipped)")


if __name__ == "__main__":
    main()
